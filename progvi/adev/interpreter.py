"""The forward-mode ADEV interpreter: an environment, one loop over equations, a rule table.

Values are dual numbers ``(primal, tangent)``; a tangent of ``None`` is a symbolic zero. Equations
that contain no sample site are handed to `jax.jvp` whole, so every JAX primitive works: each run of
consecutive such equations in one `jax.jvp` call (a `_Segment`; one JVP trace per equation made
tracing a large program slow), with only the inputs that have a tangent as its inputs. Equations
that contain sample sites are interpreted by a rule in `RULES` (keyed by primitive name) in
continuation-passing style: each rule receives ``kont``, the rest of the program, so that a
strategy can run it several times.

``State`` threads the score terms of local strategies (REINFORCE) to the end of the program, where
``finish`` adds ``final value * score - offset`` to the tangent: the score-function estimator
with per-site baselines (``offset`` accumulates ``baseline * score``). It also carries where the
estimator states of this run are written (`state.Sink`), and why they cannot be, if they cannot.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._compat import Literal, bind_equation, is_batched, jaxpr_as_fun, sub_jaxprs
from .addresses import address_salt
from .enum import Enum, support_size
from .errors import ProgramError, StrategyError
from .learned_baseline import check_site as check_learned_site
from .learned_baseline import check_value as check_learned_value
from .learned_baseline import learned_field
from .primitive import lift, sample_p, unflatten
from .state import INITS, read, register
from .strategy import Continuation, instantiate_tangent, stateful_field

Dual = tuple[Any, Any]
Kont = Callable[[list[Dual], "State"], Any]


class State(NamedTuple):
    score: Any = None  # Σ score tangents of local sites (coefficient: the final value)
    offset: Any = None  # Σ baseline · score tangent
    pure: bool = False  # plain sampling, no tangents: the continuation's `pure` form
    sink: Any = None  # the `Sink` that receives this run's estimator states (None: dropped)
    barrier: str | None = None  # why no state can be written here, if none can
    plate: bool = False  # inside one datapoint's term of `pv.plate`
    copies: int = 1  # how many times this point is traced (sequential enumerations multiply it)
    ahead: int = 1  # how many times sequential enumerations after this point would multiply it
    switched: str | None = None  # the pv.enum site before this point that runs in parallel


class Frame(NamedTuple):
    key: Any  # this jaxpr's key; an equation draws from fold_in(key, salt of its addresses)
    loop: str | None = None  # the loop whose body is being interpreted, if any
    states: Any = None  # the estimator states of this step, by address (None: initial ones)
    # (held key, salts): the top-level equations whose salt is not in salts draw from the held key
    # instead of `key` (a variance diagnostic varies one site's draws, holding the others).
    pin: Any = None
    # The keys of this jaxpr's top-level rule equations, by index, when derived beforehand (the
    # runs of a log-expectation get theirs in one split per site); None: from `key`.
    site_keys: Any = None


def contains_sample(eqn) -> bool:
    """Whether `eqn` needs a rule: a sample site, a progvi construct, or a body with either."""
    if eqn.primitive is sample_p or eqn.primitive.name in RULES and eqn.primitive.name.startswith(
        "progvi_"
    ):
        return True
    return any(_has_sites(jaxpr) for jaxpr in sub_jaxprs(eqn))


# Jaxprs are immutable, so what is found in one is kept for as long as the jaxpr lives: a nested
# body is walked once, not once per equation that holds it and per run of a continuation.
_HAS_SITES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_sites(jaxpr) -> bool:
    found = _HAS_SITES.get(jaxpr)
    if found is None:
        found = _HAS_SITES[jaxpr] = any(contains_sample(eqn) for eqn in jaxpr.eqns)
    return found


class _Segment:
    """A maximal run of consecutive equations without sample sites, evaluated in one go.

    One `jax.jvp` of the whole run costs one JVP trace instead of one per equation. ``invars``
    are the variables it reads that are defined before it; ``outvars`` those it defines that are
    read after it (the others need not leave it).
    """

    def __init__(self, eqns, invars, outvars):
        self.eqns, self.invars, self.outvars = eqns, invars, outvars
        self._dependent = {}

    def dependent(self, live: tuple[int, ...]) -> list[bool]:
        """Which outvars depend on the inputs at positions `live` (the others have no tangent)."""
        found = self._dependent.get(live)
        if found is None:
            reached = {self.invars[i] for i in live}
            for eqn in self.eqns:
                if any(not isinstance(v, Literal) and v in reached for v in eqn.invars):
                    reached.update(eqn.outvars)
            found = self._dependent[live] = [v in reached for v in self.outvars]
        return found


class _Site(NamedTuple):
    """An equation interpreted by a rule; ``index``: its position among them (for its key)."""

    eqn: Any
    index: int


class _Plan(NamedTuple):
    steps: list  # `_Segment`s and `_Site`s, in program order
    salts: list[int]  # the address salt of each `_Site`, by index
    ahead: list[int]  # for each `_Site`: the fan-out of the sites after it in this jaxpr
    fanout: int  # the fan-out of all its sites


def _fanout(eqn) -> int:
    """How many times a sequential enumeration in `eqn` traces what follows it (1: none).

    For a site, its support size if its strategy is sequential `pv.enum` and the size is known
    from the equation alone; for a call, the product over its body; for a cond, the largest
    over the branches. Sites in loop bodies cannot enumerate sequentially.
    """
    name = eqn.primitive.name
    if eqn.primitive is sample_p:
        return _enum_fanout(eqn)
    if name in ("jit", "pjit", "closed_call"):
        return math.prod(_plan(jaxpr).fanout for jaxpr in sub_jaxprs(eqn))
    if name == "cond":
        return max(_plan(jaxpr).fanout for jaxpr in sub_jaxprs(eqn))
    return 1


def _enum_fanout(eqn) -> int:
    treedef, levels = eqn.params["treedef"], eqn.params["levels"]
    strategy_tree = jax.tree_util.treedef_children(treedef)[1]
    strategy = jax.tree.unflatten(strategy_tree, [None] * strategy_tree.num_leaves)
    if not isinstance(strategy, Enum) or strategy.parallel or levels:
        return 1
    leaves = [v.val if isinstance(v, Literal) else None for v in eqn.invars]
    traced = [i for i, leaf in enumerate(leaves) if leaf is None]

    def dist(*xs):
        for i, x in zip(traced, xs, strict=True):
            leaves[i] = x
        return unflatten(treedef, leaves)[0]

    avals = [jax.ShapeDtypeStruct(eqn.invars[i].aval.shape, eqn.invars[i].aval.dtype)
             for i in traced]
    return strategy.fanout(support_size(dist, *avals))


def _plan(jaxpr) -> _Plan:
    plan = _PLANS.get(jaxpr)
    if plan is None:
        plan = _PLANS[jaxpr] = _make_plan(jaxpr)
    return plan


def _make_plan(jaxpr) -> _Plan:
    eqns = jaxpr.eqns
    last_read = {}  # variable -> the position of the last equation that reads it
    for i, eqn in enumerate(eqns):
        for v in eqn.invars:
            if not isinstance(v, Literal):
                last_read[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, Literal):
            last_read[v] = len(eqns)
    steps, salts, fanouts, start = [], [], [], 0
    for i, eqn in enumerate(eqns):
        if contains_sample(eqn):
            steps += _segment(eqns, start, i, last_read)
            steps.append(_Site(eqn, len(salts)))
            salts.append(address_salt(eqn))
            fanouts.append(_fanout(eqn))
            start = i + 1
        elif eqn.primitive.name == "cond":
            # On its own: `default_rule` may have to differentiate it branch by branch.
            steps += _segment(eqns, start, i, last_read) + _segment(eqns, i, i + 1, last_read)
            start = i + 1
    steps += _segment(eqns, start, len(eqns), last_read)
    ahead = [math.prod(fanouts[j + 1:]) for j in range(len(fanouts))]
    return _Plan(steps, salts, ahead, math.prod(fanouts))


def _segment(eqns, start, end, last_read) -> list[_Segment]:
    """The segment of equations ``start:end`` (none if empty)."""
    if start == end:
        return []
    defined, invars = set(), {}
    for eqn in eqns[start:end]:
        for v in eqn.invars:
            if not isinstance(v, Literal) and v not in defined:
                invars.setdefault(v)
        defined.update(eqn.outvars)
    outvars = [v for eqn in eqns[start:end] for v in eqn.outvars if last_read.get(v, -1) >= end]
    return [_Segment(eqns[start:end], list(invars), outvars)]


def _site_keys(key, salts):
    """The key of each rule equation, ``fold_in(key, salt)``, in one vectorized `fold_in`.

    The same keys as a `fold_in` at each site, but one threefry hash over all the salts instead
    of one per site: for a program of many sites that is much less code for XLA to compile.
    """
    if len(salts) == 1:
        return [jax.random.fold_in(key, salts[0])]
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, np.asarray(salts, np.uint32))


def run_keys(jaxpr, key, num_runs: int):
    """The site keys of `num_runs` independent runs of `jaxpr`, shape (num_runs, sites), or None
    when it has no rule equations: for each site, its key ``fold_in(key, salt)`` split in
    `num_runs`. One fold_in and one split per site, against a split and then a fold_in per run
    and site (threefry hashes are a visible part of a step whose runs are small)."""
    salts = _plan(jaxpr).salts
    if not salts:
        return None
    per_site = [jax.random.split(k, num_runs) for k in _site_keys(key, salts)]
    return jnp.stack(per_site, axis=1)


def run(jaxpr, consts, args: list[Dual], frame: Frame, state: State, kont: Kont):
    """Interprets `jaxpr` on dual `args`, then passes its outputs to `kont`."""
    env = {}
    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = (value, None)
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    plan = _plan(jaxpr)
    if frame.site_keys is not None:
        keys, frame = frame.site_keys, frame._replace(site_keys=None)
    else:
        keys = _site_keys(frame.key, plan.salts) if plan.salts else []
    if frame.pin is not None and plan.salts:
        held, varied = frame.pin
        held_keys = _site_keys(held, plan.salts)
        keys = [k if salt in varied else h
                for k, h, salt in zip(keys, held_keys, plan.salts, strict=True)]
        frame = frame._replace(pin=None)
    return _run_from(jaxpr, plan, 0, env, keys, frame, state, kont)


def _read(env, var) -> Dual:
    return (var.val, None) if isinstance(var, Literal) else env[var]


def _run_from(jaxpr, plan, start, env, keys, frame, state, kont):
    for i in range(start, len(plan.steps)):
        step = plan.steps[i]
        if isinstance(step, _Segment):
            env.update(_run_segment(step, env, state.pure))
            continue
        eqn = step.eqn
        invals = [_read(env, v) for v in eqn.invars]
        rule = RULES.get(eqn.primitive.name)
        if rule is None:
            raise ProgramError(
                f"sample sites inside `{eqn.primitive.name}` are not supported. Move the "
                "pv.sample calls out of it; progvi handles jit, cond/switch, scan/fori_loop "
                "(static trip count) and vmap around sample sites."
            )

        def rest(outs, state, i=i, eqn=eqn, ahead=state.ahead):
            env_after = dict(env)
            env_after.update(zip(eqn.outvars, outs, strict=True))
            state = state._replace(ahead=ahead)
            return _run_from(jaxpr, plan, i + 1, env_after, keys, frame, state, kont)

        sub = frame._replace(key=keys[step.index])
        # What follows this equation, in this jaxpr and after it: how often a sequential
        # enumeration in it would trace the rest of the program.
        state = state._replace(ahead=state.ahead * plan.ahead[step.index])
        return rule(eqn, invals, sub, state, rest)
    return kont([_read(env, v) for v in jaxpr.outvars], state)


def _run_segment(segment: _Segment, env, pure: bool):
    """The (variable, dual) pairs a segment defines, its inputs read from `env`."""
    if len(segment.eqns) == 1:
        (eqn,) = segment.eqns
        outs = default_rule(eqn, [_read(env, v) for v in eqn.invars], pure)
        return zip(eqn.outvars, outs, strict=True)
    invals = [env[v] for v in segment.invars]
    primals = [p for p, _ in invals]
    live = tuple(i for i, (_, t) in enumerate(invals) if t is not None)
    if pure or not live:
        outs = _evaluate(segment, primals)
        return [(v, (out, None)) for v, out in zip(segment.outvars, outs, strict=True)]
    dependent = segment.dependent(live)

    def on_live(*xs):
        args = list(primals)  # inputs without a tangent stay fixed: no zero tangents pushed
        for i, x in zip(live, xs, strict=True):
            args[i] = x
        outs = _evaluate(segment, args)
        # Outputs that no live input reaches leave as aux values: no zero tangents for them.
        return ([o for o, d in zip(outs, dependent, strict=True) if d],
                [o for o, d in zip(outs, dependent, strict=True) if not d])

    outs, tangents, fixed = jax.jvp(
        on_live, [primals[i] for i in live], [invals[i][1] for i in live], has_aux=True
    )
    outs, tangents, fixed = iter(outs), iter(tangents), iter(fixed)
    return [
        (v, (next(outs), _symbolic(next(tangents))) if d else (next(fixed), None))
        for v, d in zip(segment.outvars, dependent, strict=True)
    ]


def _evaluate(segment: _Segment, args) -> list:
    """Re-binds a segment's equations on new inputs; returns its outvars' values."""
    env = dict(zip(segment.invars, args, strict=True))
    for eqn in segment.eqns:
        invals = [v.val if isinstance(v, Literal) else env[v] for v in eqn.invars]
        env.update(zip(eqn.outvars, bind_equation(eqn, invals), strict=True))
    return [env[v] for v in segment.outvars]


def default_rule(eqn, invals: list[Dual], pure: bool) -> list[Dual]:
    """Any equation without sample sites: re-bind it, under `jax.jvp` if a tangent is nonzero."""
    primals = [p for p, _ in invals]
    live = [i for i, (_, t) in enumerate(invals) if t is not None]
    if pure or not live:
        return [(out, None) for out in bind_equation(eqn, primals)]

    def on_live(*xs, run=lambda args: bind_equation(eqn, args)):
        args = list(primals)  # inputs without a tangent stay fixed: no zero tangents pushed
        for i, x in zip(live, xs, strict=True):
            args[i] = x
        return run(args)

    live_primals, live_tangents = [primals[i] for i in live], [invals[i][1] for i in live]
    if eqn.primitive.name == "cond" and is_batched(primals[0]):
        return _cond_as_select(eqn, on_live, live_primals, live_tangents, primals[0])
    outs, out_tangents = jax.jvp(on_live, live_primals, live_tangents)
    return [(o, _symbolic(t)) for o, t in zip(outs, out_tangents, strict=True)]


def _cond_as_select(eqn, on_live, live_primals, live_tangents, index):
    """A `cond` whose index is batched, differentiated branch by branch and selected.

    Under `jax.vmap` a cond with a batched index becomes a select of both branches, and JAX's
    batching rule puts a `stop_gradient` on the operands of the untaken branch: applied to the
    tangents that our JVP passes as operands, it leaves a primitive in the linear part that
    cannot be transposed. Selecting the branches' JVPs keeps the tangents linear.
    """
    def branch(closed):
        return lambda args: jaxpr_as_fun(closed)(*args[1:])

    duals = [jax.jvp(functools.partial(on_live, run=branch(closed)), live_primals, live_tangents)
             for closed in eqn.params["branches"]]
    outs = []
    for k in range(len(eqn.outvars)):
        out = jax.lax.select_n(index, *[jnp.asarray(o[k]) for o, _ in duals])
        tangent = jax.lax.select_n(index, *[jnp.asarray(t[k]) for _, t in duals])
        outs.append((out, _symbolic(tangent)))
    return outs


def _symbolic(tangent):
    return None if tangent.dtype == jax.dtypes.float0 else tangent


def sample_rule(eqn, invals, frame, state, kont):
    address, treedef, levels = eqn.params["address"], eqn.params["treedef"], eqn.params["levels"]
    leaves = [p for p, _ in invals]
    tangents = [instantiate_tangent(p, t) for p, t in invals]
    dist, strategy, _ = unflatten(treedef, leaves)
    field = stateful_field(strategy)
    if field is not None:
        # A stateful part (a moving-average baseline) is read before the draw and updated from
        # the value of the term when it ends.
        estimator = getattr(strategy, field)
        current = read(frame.states, address, estimator.init)
        if not state.pure:
            register(state, address, estimator, current)
        stateless = {field: estimator.read(current)}
        strategy = strategy(**stateless)
    else:
        stateless = {}
    if state.pure:
        draw = lift(lambda k, xs, _: unflatten(treedef, xs)[0].sample(k), levels)
        return kont([(draw(frame.key, leaves, tangents), None)], state)
    learned = learned_field(strategy)
    if learned is not None:
        check_learned_site(address, strategy, state)
    if strategy.is_local:

        def local(key, xs, ts):
            d, s, _ = unflatten(treedef, xs)
            if learned is None:
                fixed, baseline = {}, (None, None)
            else:
                # The site sees the learned baseline stopped, which keeps its estimate unbiased;
                # its dual number leaves for the squared error of the term's value.
                b = getattr(s, learned).value
                check_learned_value(address, b)
                fixed = {learned: jax.lax.stop_gradient(b)}
                baseline = (b, getattr(unflatten(treedef, ts)[1], learned).value)
            loc = s(**stateless, **fixed).local(key, d, unflatten(treedef, ts)[0])
            if loc.score is None:
                return loc.value, loc.tangent, None, None, baseline
            return loc.value, loc.tangent, loc.score, loc.score * loc.baseline, baseline

        value, tangent, score, offset, baseline = lift(local, levels)(
            frame.key, leaves, tangents)
        if learned is not None:
            state.sink.learned.append(baseline)
        if score is not None:
            state = state._replace(
                score=_add(state.score, jnp.sum(score)), offset=_add(state.offset, jnp.sum(offset))
            )
        return kont([(value, tangent)], state)
    if levels or frame.loop:
        where = "inside a `jax.vmap`" if levels else f"inside a `{frame.loop}` body"
        raise StrategyError(
            f"sample site {address!r} is {where}, but pv.{strategy.name} needs the rest of the "
            "program (its continuation), which a loop or vmap body cannot see. Use a Python loop "
            "(or vmap the whole estimate) for this site, or a local strategy such as pv.reparam "
            "or pv.reinforce."
        )
    pure_state = State(pure=True)
    after = state._replace(barrier=state.barrier or (
        f"after sample site {address!r}, whose strategy pv.{strategy.name} runs the rest of "
        "the program several times"))
    if isinstance(strategy, Enum):
        strategy, after = _enumeration(strategy, address, dist, state, after)
    cont = Continuation(
        dual=lambda x, dx=None: kont([(x, dx)], after),
        pure=lambda x: kont([(x, None)], pure_state)[0],
    )
    return strategy.jvp(frame.key, dist, unflatten(treedef, tangents)[0], cont)


def _enumeration(strategy, address, dist, state, after):
    """The form of an enumerated site, and the state of the rest of the program.

    The sequential form traces the rest once per value: the rest sees `copies` multiplied by the
    support size, and the site switches to the parallel form (`Enum.form`) where that would
    trace the end of the program too many times, counting the sites after it (``state.ahead``).
    """
    size = support_size(lambda: dist)
    if size is not None:
        strategy.check_size(address, dist, size)
    if strategy.parallel or size is None:
        return strategy, after
    form = strategy.form(address, size, state.copies * size * state.ahead, state.switched)
    if form.parallel:
        return form, after._replace(switched=after.switched or address)
    return form, after._replace(copies=state.copies * size)


def _add(total, term):
    return term if total is None else total + term


def finish(outs: list[Dual], state: State) -> Dual:
    """The terminal continuation of a whole program: adds the deferred score terms."""
    ((ret, dret),) = outs
    if not jnp.issubdtype(jnp.result_type(ret), jnp.inexact):
        ret = jnp.asarray(ret, jnp.result_type(float))
        dret = None
    if state.pure:
        return ret, None
    dret = jnp.zeros_like(ret) if dret is None else dret
    if state.score is not None:
        dret = dret + ret * state.score - state.offset
    return ret, dret


def _sample_inits(eqn):
    strategy_tree = jax.tree_util.treedef_children(eqn.params["treedef"])[1]
    strategy = jax.tree.unflatten(strategy_tree, [None] * strategy_tree.num_leaves)
    field = stateful_field(strategy)
    return [] if field is None else [(eqn.params["address"], getattr(strategy, field).init())]


RULES: dict[str, Callable] = {"progvi_sample": sample_rule}
INITS["progvi_sample"] = _sample_inits
