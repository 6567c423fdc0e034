"""`plate`: a sum of per-datapoint expectations inside a program, each with its own estimator.

``pv.plate(fn, *args)`` is ``Σ_i fn(*args_i)`` over the leading axis of `args`. Each term is
estimated as an expectation of its own: the sample sites of ``fn`` for datapoint ``i`` see the
rest of *that term* as their continuation, so a REINFORCE term for ``z_i`` multiplies ``fn``'s
value at datapoint ``i`` only (per-datapoint Rao-Blackwellization), a learned baseline of
``z_i`` is regressed on that value, and strategies that need a continuation (enumeration, MVD,
leave-one-out) work for each datapoint. Sites outside the plate
(global latents) see the whole program as usual.

By linearity of expectation this is unbiased when the program uses the plate's value linearly
(adds it to the objective), as an ELBO over a dataset does.

Implementation: the term is traced once, for one datapoint, into the `plate_p` equation; the
interpreter evaluates it under `jax.vmap` over datapoints, each with its own key and its own
terminal continuation, and passes the summed dual number to the rest of the program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._compat import Primitive, ShapedArray, hoist_consts
from .errors import ProgramError
from .handlers import active
from .interpreter import RULES, State, finish, run
from .state import Sink, mean_over_axis0, metric_mean, write, write_loss, write_metric

plate_p = Primitive("progvi_plate")
plate_p.multiple_results = False


def _abstract_eval(*avals, jaxpr, num_consts, in_axes, size):
    (out,) = [v.aval for v in jaxpr.outvars]
    return ShapedArray(out.shape, jnp.result_type(out.dtype, float))


def _impl(*args, **params):
    raise ProgramError(
        "pv.plate was evaluated outside an expectation program; call it inside one and use "
        "obj.estimate(key, ...)."
    )


plate_p.def_abstract_eval(_abstract_eval)
plate_p.def_impl(_impl)


def plate(fn: Callable, *args: Any, in_axes: int | tuple | None = 0) -> jax.Array:
    """Inside an expectation program: ``Σ_i fn(*args_i)``, each term its own expectation.

    Args:
      fn: the term of one datapoint; may call `pv.sample`, `pv.simulate`, `pv.density`.
      *args: its arguments, batched along `in_axes`.
      in_axes: an int or None for every argument, or a tuple with one per argument.

    Returns:
      The sum of the terms (their shape), a random variable of the program.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def total(m, xs):
      ...     term = lambda x: jnp.exp(pv.sample("z", dist.Normal(m + x, 1.0), pv.reinforce))
      ...     return pv.plate(term, xs)
      >>> keys = jax.random.split(jax.random.key(0), 20000)
      >>> xs = jnp.array([0.0, 0.5])
      >>> g = jax.vmap(lambda k: total.grad(k, 0.0, xs))(keys).mean()
      >>> print(f"{g:.1f}")  # d/dm Σ_i exp(m + x_i + 1/2)
      4.4
    """
    if not active():
        raise ProgramError(
            "pv.plate is called inside an expectation program (@pv.expectation); outside one "
            "there is nothing to estimate."
        )
    if not callable(fn):
        raise ProgramError(
            f"pv.plate: fn is {type(fn).__name__}, not a function. The term of one datapoint "
            "comes first: pv.plate(lambda x: ..., xs)."
        )
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    if len(axes) != len(args) or not all(a is None or isinstance(a, int) for a in axes):
        raise ProgramError(
            f"pv.plate: in_axes={in_axes!r} must be an int, None, or a tuple with one of those "
            f"for each of the {len(args)} arguments."
        )
    flat, tree = jax.tree.flatten(args)
    leaf_axes = [a for arg, a in zip(args, axes, strict=True) for _ in jax.tree.leaves(arg)]
    for i, (x, a) in enumerate(zip(flat, leaf_axes, strict=True)):
        if a is not None and not -jnp.ndim(x) <= a < jnp.ndim(x):
            raise ProgramError(
                f"pv.plate: argument leaf {i} has shape {jnp.shape(x)}, which has no axis {a} "
                "to map over. Give it a leading datapoint axis, or in_axes=None for an argument "
                "every datapoint shares."
            )
    sizes = {jnp.shape(x)[a] for x, a in zip(flat, leaf_axes, strict=True) if a is not None}
    if len(sizes) != 1:
        raise ProgramError(
            f"pv.plate: the mapped arguments must share one number of datapoints along in_axes; "
            f"found sizes {sorted(sizes) or 'none (no argument is mapped)'}."
        )

    def one(*leaves):
        return jnp.asarray(fn(*jax.tree.unflatten(tree, leaves)))

    examples = [
        x if a is None else jax.ShapeDtypeStruct(
            jnp.shape(x)[:a] + jnp.shape(x)[a + 1:], jnp.result_type(x)
        )
        for x, a in zip(flat, leaf_axes, strict=True)
    ]
    # Values the term closes over (a global latent, parameters) become operands, so that their
    # tangents reach the term.
    closed = jax.make_jaxpr(one)(*examples)
    return plate_p.bind(
        *closed.consts, *flat, jaxpr=hoist_consts(closed), num_consts=len(closed.consts),
        in_axes=tuple(leaf_axes), size=sizes.pop(),
    )


def plate_rule(eqn, invals, frame, state, kont):
    params = eqn.params
    n = params["num_consts"]
    consts, args = invals[:n], invals[n:]
    axes = params["in_axes"]

    def term(index, args):
        # Each datapoint: its own key, and `finish` as its terminal continuation, so its score
        # terms multiply its own value; its estimator states follow its own value too.
        term_frame = frame._replace(key=jax.random.fold_in(frame.key, index), loop=None)
        sink = Sink()
        state_i = State(pure=state.pure, sink=sink, plate=True)
        ret, dret = run(params["jaxpr"], (), consts + list(args), term_frame, state_i, finish)
        # Its learned baselines are regressed on its own value.
        loss = sink.aux_loss(ret) if sink.learned or sink.losses else None
        return ret, dret, sink.finish(ret), sink.metrics, loss

    dual_axes = [(a, None if t is None else a) for (_, t), a in zip(args, axes, strict=True)]
    rets, drets, states, metrics, losses = jax.vmap(term, in_axes=(0, dual_axes))(
        jnp.arange(params["size"]), args)
    if losses is not None:
        write_loss(state, (jnp.sum(losses[0]), jnp.sum(losses[1])))
    # A state read by every datapoint moves by the mean of their updates; a metric is the mean.
    for address, new_state in mean_over_axis0(states).items():
        write(state, address, new_state)
    for name, value in metric_mean(metrics).items():
        write_metric(state, name, value)
    total = (jnp.sum(rets, 0), None if drets is None else jnp.sum(drets, 0))
    return kont([total], state)


RULES["progvi_plate"] = plate_rule
