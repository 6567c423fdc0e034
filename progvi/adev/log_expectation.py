"""`log_expectation`: the log of an expectation, inside an expectation program.

``pv.log_expectation(program, *args, estimator=...)`` stands for ``log E[exp(v)]`` where ``v`` is
the value of the expectation program ``program(*args)``: the log-partition function
``log Z = log E_q[f(y) / q(y)]`` of an energy model, a log marginal likelihood. The log of an
expectation has no unbiased estimate from finitely many draws, so a `LogExpectationEstimator`
decides both the value the outer program sees and the derivative that flows from it.

The rule draws ``K = estimator.num_samples`` independent runs of the inner program. Each run is
an ordinary ADEV estimate of ``E[w]``, ``w = exp(v)``: its sites keep their strategies (an
enumerated site makes the run exact, a REINFORCE site adds its score term), so the run gives
``ŵ_k`` with ``E[ŵ_k] = E[w]`` and a tangent ``dŵ_k`` with ``E[dŵ_k] = dE[w]``. The estimator
receives them in log space, ``log ŵ_k`` and ``dŵ_k / ŵ_k``: each run is shifted by its own
log-weight where it reaches its value on one path, and otherwise (enumeration, MVD) by the
log-weight of a plain run with the same draws, so that no exponential overflows.

The inner program's sites get addresses under the construct's own (``"log_weight/y"``), where
`pv.with_strategies` patterns of the outer program reach them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from ._compat import ClosedJaxpr, Primitive, ShapedArray, batching, get_opaque_trace_state
from .errors import AddressError, ProgramError
from .handlers import Handler, active, handle
from .interpreter import RULES, Frame, State, finish, run, run_keys
from .primitive import unflatten
from .state import INITS, read, write
from .strategy import _flatten, _unflatten, instantiate_tangent


class InnerEstimates(NamedTuple):
    """What a `LogExpectationEstimator` receives from the K runs of the inner program."""

    log_w: jax.Array  # (K,): log ŵ_k, the log of each run's unbiased estimate of E[exp(v)]
    dlog_w: jax.Array  # (K,): dŵ_k / ŵ_k, each run's tangent relative to its value (0 if pure)
    inputs: list  # the inner program's inputs at this step (its arguments and closed-over values)
    at: Callable[[list], jax.Array]  # other inputs -> (K,) log ŵ_k there, same draws, no tangents


class LogExpectationEstimator:
    """Base class of log-expectation estimators: a frozen dataclass and a pytree.

    A subclass sets `name`, has a `num_samples` field (the runs K of the inner program per
    estimate), and implements

    * ``init(inputs) -> state``: the state before the first step, or None for a stateless
      estimator; ``inputs`` are the inner program's inputs as `jax.ShapeDtypeStruct`s;
    * ``jvp(inner, state, tangent) -> (value, tangent_of_value, next_state)``: the dual number
      the outer program receives, from the `InnerEstimates` ``inner``; ``tangent`` holds the
      tangents of the fields named in `dynamic_fields` (learned quantities), in an estimator of
      the same structure; ``next_state`` is None for a stateless estimator.
    """

    name: ClassVar[str] = "log-expectation estimator"
    dynamic_fields: ClassVar[tuple[str, ...]] = ()
    num_samples: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, _flatten, _unflatten(cls))

    def init(self, inputs) -> Any:
        return None

    def jvp(self, inner: InnerEstimates, state, tangent) -> tuple[Any, Any, Any]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement jvp(inner, state, tangent) -> "
            "(value, tangent, next_state)."
        )

    def __call__(self, **changes):
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


def check_num_samples(name: str, num_samples) -> None:
    if not (isinstance(num_samples, int) and not isinstance(num_samples, bool)
            and num_samples >= 1):
        raise ValueError(
            f"pv.{name}: num_samples={num_samples!r}, but it must be a Python int of at least 1 "
            f"(the number of runs of the inner program per estimate), e.g. "
            f"pv.{name}(num_samples=8)."
        )


log_expectation_p = Primitive("progvi_log_expectation")


def _abstract_eval(*avals, jaxpr, num_inputs, estimator, address):
    (out,) = [v.aval for v in jaxpr.jaxpr.outvars]
    return ShapedArray((), out.dtype)


def _impl(*args, address, **params):
    raise ProgramError(
        f"pv.log_expectation at {address!r} was evaluated outside an expectation program; call "
        "it inside one and use obj.estimate(key, ...)."
    )


def _batch(args, dims, *, address, **params):
    raise ProgramError(
        f"pv.log_expectation at {address!r} is inside a jax.vmap (or pv.particles) of the "
        "program. For one log-expectation per datapoint, call it inside pv.plate, or vmap the "
        "whole estimate over the datapoints."
    )


log_expectation_p.def_abstract_eval(_abstract_eval)
log_expectation_p.def_impl(_impl)
batching.primitive_batchers[log_expectation_p] = _batch


class _Prefix(Handler):
    """Puts the sites of an inner program under the address of the construct that owns it."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def sample(self, site, below):
        return below(dataclasses.replace(site, address=f"{self.prefix}/{site.address}"))


def log_expectation(program: Callable, *args: Any, estimator: LogExpectationEstimator,
                    address: str | None = None) -> jax.Array:
    """Inside an expectation program: an estimate of ``log E[exp(v)]``, ``v = program(*args)``.

    Args:
      program: a ``@pv.expectation`` program returning a real scalar, the log-weight ``v``.
      *args: its arguments.
      estimator: how the log of the expectation is estimated and differentiated:
        `pv.plug_in`, `pv.compositional` (stateful), `pv.tangent_bound`, or a
        `pv.LogExpectationEstimator` of your own.
      address: the name of this construct, under which the inner program's sites are addressed
        and the estimator's state is kept; default: the program's name.

    Returns:
      A scalar random variable of the outer program.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def log_weight(m):  # w = exp(y), y ~ N(m, 1): E[w] = exp(m + 1/2)
      ...     return pv.sample("y", dist.Normal(m, 1.0))
      >>> @pv.expectation
      ... def log_z(m):
      ...     return pv.log_expectation(log_weight, m, estimator=pv.plug_in(num_samples=4000))
      >>> print(f"{log_z.estimate(jax.random.key(0), 1.0):.1f}")  # log E[w] = 1.5
      1.5
      >>> print(f"{log_z.grad(jax.random.key(1), 1.0):.1f}")  # d/dm (m + 1/2)
      1.0
    """
    if not active():
        raise ProgramError(
            "pv.log_expectation is called inside an expectation program (@pv.expectation); "
            "outside one there is nothing to estimate."
        )
    if not (callable(program) and callable(getattr(program, "estimate", None))):
        raise ProgramError(
            f"pv.log_expectation: program={program!r} is not an expectation program. Decorate "
            "the function whose value is the log-weight with @pv.expectation."
        )
    if not isinstance(estimator, LogExpectationEstimator):
        raise TypeError(
            f"pv.log_expectation: estimator={estimator!r} is not a log-expectation estimator. "
            "Pass estimator=pv.plug_in(num_samples=K), pv.compositional(gamma=...) or "
            "pv.tangent_bound(b)."
        )
    address = getattr(program, "__name__", None) if address is None else address
    if not isinstance(address, str) or not address:
        raise AddressError(
            f"pv.log_expectation needs a non-empty string address, got {address!r}: pass "
            'address="log_z".'
        )
    flat, tree = jax.tree.flatten(args)
    flat = [jnp.asarray(x) for x in flat]

    def inner(*leaves):
        with handle(_Prefix(address)):
            return program(*jax.tree.unflatten(tree, leaves))

    examples = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in flat]
    closed, out = jax.make_jaxpr(inner, return_shape=True)(*examples)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()
            and jnp.issubdtype(out.dtype, jnp.floating)):
        got = (f"shape {out.shape} and dtype {out.dtype}" if isinstance(out, jax.ShapeDtypeStruct)
               else f"{jax.tree.structure(out)}")
        raise ProgramError(
            f"pv.log_expectation at {address!r}: the inner program {program.__name__!r} returns "
            f"{got}, but it must return one real scalar, the log-weight log w whose "
            "exponential is averaged. Return e.g. log_f(y) - q.log_prob(y) for one draw y."
        )
    # Values of the outer program the inner one closes over (params) become inputs, so that
    # their tangents reach it; constants stay in the jaxpr, so the inputs do not depend on how
    # the program was traced.
    traced, jaxpr = _closed_over_as_inputs(closed)
    est_leaves, est_tree = jax.tree.flatten(estimator)
    est_leaves = [jnp.asarray(x) for x in est_leaves]
    return log_expectation_p.bind(
        *traced, *flat, *est_leaves, jaxpr=jaxpr, num_inputs=len(traced) + len(flat),
        estimator=est_tree, address=address,
    )


def _closed_over_as_inputs(closed):
    jaxpr = closed.jaxpr
    pairs = list(zip(jaxpr.constvars, closed.consts, strict=True))
    traced = [(v, c) for v, c in pairs if isinstance(c, jax.core.Tracer)]
    fixed = [(v, c) for v, c in pairs if not isinstance(c, jax.core.Tracer)]
    inner = jaxpr.replace(constvars=[v for v, _ in fixed],
                          invars=[*[v for v, _ in traced], *jaxpr.invars])
    return [c for _, c in traced], ClosedJaxpr(inner, [c for _, c in fixed])


def log_expectation_rule(eqn, invals, frame, state, kont):
    params = eqn.params
    jaxpr, address, n = params["jaxpr"], params["address"], params["num_inputs"]
    inputs, est_duals = invals[:n], invals[n:]
    estimator = unflatten(params["estimator"], [x for x, _ in est_duals])
    tangent = unflatten(params["estimator"], [instantiate_tangent(x, t) for x, t in est_duals])
    current = read(frame.states, address, lambda: estimator.init(_shapes(inputs)))
    # Per run, the keys of the inner program's sites (or, without sites, a key per run).
    keys = run_keys(jaxpr.jaxpr, frame.key, estimator.num_samples)
    if keys is None:
        keys = jax.random.split(frame.key, estimator.num_samples)
    primal_inputs = [x for x, _ in inputs]

    def plain(key, xs):  # one run without tangents: its log-weight
        run_frame = _run_frame(key, frame)
        return run(jaxpr.jaxpr, jaxpr.consts, [(x, None) for x in xs], run_frame,
                   State(pure=True), finish)[0]

    def at(xs):
        return _over_runs(lambda k: plain(k, list(xs)), keys)

    if state.pure:
        log_w = jax.lax.stop_gradient(at(primal_inputs))
        dlog_w = jnp.zeros_like(log_w)
    else:
        inner_state = State(barrier=f"inside the inner program of pv.log_expectation {address!r}")

        def dual(key, shift=None):
            # exp(v - shift) with a shift that is one constant across the run's paths, so that
            # it stays near 1. A run that reaches its value once, outside any strategy's vmap or
            # loop, takes its own value (its weight is then exactly 1): no second pass. A run of
            # several paths (enumeration, MVD) takes the value of a plain run with its draws.
            outer, shifts = get_opaque_trace_state(), []

            def shifted(outs, st):
                ((v, dv),) = outs
                if shift is None:
                    if shifts or get_opaque_trace_state() != outer:
                        raise _SeveralPaths
                    shifts.append(jax.lax.stop_gradient(v))
                r = jnp.exp(v - (shifts[0] if shift is None else shift))
                return finish([(r, None if dv is None else r * dv)], st)

            r, dr = run(jaxpr.jaxpr, jaxpr.consts, inputs, _run_frame(key, frame), inner_state,
                        shifted)
            if shift is None and not shifts:
                raise _SeveralPaths
            return (shifts[0] if shift is None else shift) + jnp.log(r), dr / r

        try:
            log_w, dlog_w = _over_runs(dual, keys)
        except _SeveralPaths:
            shifts = jax.lax.stop_gradient(at(primal_inputs))
            log_w, dlog_w = _over_runs(dual, keys, shifts)
    inner = InnerEstimates(log_w=log_w, dlog_w=dlog_w, inputs=primal_inputs, at=at)
    value, dvalue, next_state = estimator.jvp(inner, current, tangent)
    if next_state is not None:
        if state.plate:
            raise ProgramError(
                f"the stateful estimator pv.{estimator.name} at {address!r} is inside pv.plate: "
                "each datapoint would need a running estimate of its own, which minibatches "
                "cannot keep. Use pv.plug_in or pv.tangent_bound there, or move the "
                "log-expectation out of the plate if it does not depend on the datapoint."
            )
        write(state, address, next_state)
    return kont([(value, None if state.pure else dvalue)], state)


class _SeveralPaths(Exception):
    """A run of the inner program reaches its value on several paths: it needs a common shift."""


def _run_frame(keys, frame) -> Frame:
    """The frame of one run: `keys` are its sites' keys (`run_keys`), or its key if it has none."""
    if keys.ndim == 0:
        return Frame(keys, states=frame.states)
    return Frame(keys[0], states=frame.states, site_keys=keys)


def _over_runs(fn, keys, *xs):
    """``jax.vmap(fn)(keys, *xs)``, with one run called directly.

    A unit axis through the inner program (its matmuls contracting over a batch of one)
    compiles on XLA's CPU backend to transposed copies and slower matmuls: 1.2x the step
    (benchmarks/unnormalized_step.py).
    """
    if keys.shape[0] == 1:
        return jax.tree.map(lambda y: y[None], fn(keys[0], *(x[0] for x in xs)))
    return jax.vmap(fn)(keys, *xs)


def _shapes(inputs):
    return [jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x, _ in inputs]


def _inits(eqn):
    params = eqn.params
    leaves = [v.aval for v in eqn.invars[params["num_inputs"]:]]
    estimator = unflatten(params["estimator"], leaves)
    inputs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
              for v in eqn.invars[: params["num_inputs"]]]
    initial = estimator.init(inputs)
    return [] if initial is None else [(params["address"], initial)]


RULES["progvi_log_expectation"] = log_expectation_rule
INITS["progvi_log_expectation"] = _inits

__all__ = ["InnerEstimates", "LogExpectationEstimator", "log_expectation"]
