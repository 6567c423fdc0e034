"""Interpreter rules for higher-order primitives whose bodies contain sample sites.

* ``jit`` (and ``closed_call``): interpret the inner jaxpr in line.
* ``remat2`` (`jax.checkpoint` / `jax.remat`): interpret the body in line too. The values and the
  gradient are those of the program without the checkpoint, but around sample sites the
  checkpoint saves no memory: the residuals of the interpreted body are kept as usual.
* ``cond`` (``lax.cond``/``lax.switch``): each branch is interpreted together with the rest of the
  program, so strategies inside a branch see their whole continuation.
* ``scan`` (``lax.scan``, ``fori_loop`` with a static trip count): the body is interpreted once,
  as the body of a new `lax.scan` over dual numbers. Only local strategies can run there; their
  score terms travel through the carry. Iteration ``t`` draws from ``fold_in(key, t)``.
"""

import jax
import jax.numpy as jnp

from ._compat import scan_parts
from .interpreter import RULES, run
from .strategy import instantiate_tangent


def call_rule(eqn, invals, frame, state, kont):
    closed = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    jaxpr, consts = (closed.jaxpr, closed.consts) if hasattr(closed, "consts") else (closed, ())
    return run(jaxpr, consts, invals, frame, state, kont)


def cond_rule(eqn, invals, frame, state, kont):
    (index, _), operands = invals[0], invals[1:]
    # The rest of the program runs inside each branch: states written there could not leave it.
    state = state._replace(barrier=state.barrier or (
        "after a lax.cond whose branches hold sample sites or progvi constructs"))
    branches = [
        lambda br=br: run(br.jaxpr, br.consts, operands, frame, state, kont)
        for br in eqn.params["branches"]
    ]
    return jax.lax.switch(index, branches)


def _instantiate(duals, pure):
    """Fixed tangent structure for values that cross a loop boundary: zeros for every float."""
    if pure:
        return [(p, None) for p, _ in duals]
    out = []
    for p, t in duals:
        t = instantiate_tangent(p, t)
        out.append((p, None if t.dtype == jax.dtypes.float0 else t))
    return out


def _scores(state):
    """The state's score terms, as zeros where absent (None in pure mode)."""
    if state.pure:
        return None, None
    zero = jnp.zeros((), jnp.result_type(float))
    score = zero if state.score is None else state.score
    offset = zero if state.offset is None else state.offset
    return score, offset


def scan_rule(eqn, invals, frame, state, kont):
    params = eqn.params
    body = params["jaxpr"]
    consts, init, xs = scan_parts(eqn, invals)
    num_carry, pure = len(init), state.pure
    body_frame = frame._replace(loop="lax.scan")
    state = state._replace(barrier=state.barrier or "inside a lax.scan body")

    def step(carry, inputs):
        (values, scores), (x, t) = carry, inputs
        iteration_frame = body_frame._replace(key=jax.random.fold_in(frame.key, t))
        body_state = state._replace(score=scores[0], offset=scores[1])
        outs, scores = run(
            body.jaxpr, body.consts, consts + values + x, iteration_frame, body_state,
            lambda outs, st: (_instantiate(outs, pure), _scores(st)),
        )
        return (outs[:num_carry], scores), outs[num_carry:]

    (values, scores), ys = jax.lax.scan(
        step,
        (_instantiate(init, pure), _scores(state)),
        (xs, jnp.arange(params["length"])),
        length=params["length"],
        reverse=params["reverse"],
        unroll=params["unroll"],
    )
    state = state._replace(score=scores[0], offset=scores[1])
    return kont(values + ys, state)


RULES.update(jit=call_rule, pjit=call_rule, closed_call=call_rule, cond=cond_rule, scan=scan_rule)
RULES["remat2"] = call_rule  # jax.checkpoint: its body is an open jaxpr, interpreted in line
