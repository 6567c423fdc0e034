"""The forward-mode ADEV interpreter: an environment, one loop over equations, a rule table.

Values are dual numbers ``(primal, tangent)``; a tangent of ``None`` is a symbolic zero. Equations
that contain no sample site are handed to `jax.jvp` whole, so every JAX primitive works. Equations
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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._compat import Literal, bind_equation, is_batched, jaxpr_as_fun, sub_jaxprs
from .addresses import address_salt
from .errors import ProgramError, StrategyError
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


class Frame(NamedTuple):
    key: Any  # this jaxpr's key; an equation draws from fold_in(key, salt of its addresses)
    loop: str | None = None  # the loop whose body is being interpreted, if any
    states: Any = None  # the estimator states of this step, by address (None: initial ones)


def contains_sample(eqn) -> bool:
    """Whether `eqn` needs a rule: a sample site, a progvi construct, or a body with either."""
    if eqn.primitive is sample_p or eqn.primitive.name in RULES and eqn.primitive.name.startswith(
        "progvi_"
    ):
        return True
    return any(
        contains_sample(inner) for jaxpr in sub_jaxprs(eqn) for inner in jaxpr.eqns
    )


def run(jaxpr, consts, args: list[Dual], frame: Frame, state: State, kont: Kont):
    """Interprets `jaxpr` on dual `args`, then passes its outputs to `kont`."""
    env = {}
    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = (value, None)
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    return _run_from(jaxpr, 0, env, frame, state, kont)


def _read(env, var) -> Dual:
    return (var.val, None) if isinstance(var, Literal) else env[var]


def _run_from(jaxpr, start, env, frame, state, kont):
    for i in range(start, len(jaxpr.eqns)):
        eqn = jaxpr.eqns[i]
        invals = [_read(env, v) for v in eqn.invars]
        if not contains_sample(eqn):
            outs = default_rule(eqn, invals, state.pure)
            env.update(zip(eqn.outvars, outs, strict=True))
            continue
        rule = RULES.get(eqn.primitive.name)
        if rule is None:
            raise ProgramError(
                f"sample sites inside `{eqn.primitive.name}` are not supported. Move the "
                "pv.sample calls out of it; progvi handles jit, cond/switch, scan/fori_loop "
                "(static trip count) and vmap around sample sites."
            )

        def rest(outs, state, i=i, eqn=eqn):
            env_after = dict(env)
            env_after.update(zip(eqn.outvars, outs, strict=True))
            return _run_from(jaxpr, i + 1, env_after, frame, state, kont)

        sub = frame._replace(key=jax.random.fold_in(frame.key, address_salt(eqn)))
        return rule(eqn, invals, sub, state, rest)
    return kont([_read(env, v) for v in jaxpr.outvars], state)


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
    if strategy.is_local:

        def local(key, xs, ts):
            d, s, _ = unflatten(treedef, xs)
            loc = s(**stateless).local(key, d, unflatten(treedef, ts)[0])
            if loc.score is None:
                return loc.value, loc.tangent, None, None
            return loc.value, loc.tangent, loc.score, loc.score * loc.baseline

        value, tangent, score, offset = lift(local, levels)(frame.key, leaves, tangents)
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
    cont = Continuation(
        dual=lambda x, dx=None: kont([(x, dx)], after),
        pure=lambda x: kont([(x, None)], pure_state)[0],
    )
    return strategy.jvp(frame.key, dist, unflatten(treedef, tangents)[0], cont)


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
