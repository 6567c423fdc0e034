"""Estimator state inside expectation programs: found in the program, read before, written after.

Some estimators carry something from one training step to the next: a REINFORCE baseline that
averages past values, the running inner estimate of the compositional estimator of a
log-expectation. Their state is pure data keyed by the address of the construct that owns it.

* *Finding it.* Each stateful construct is an equation of the program's jaxpr (a sample site whose
  strategy holds an `Estimator`, a `pv.log_expectation`); `init_states` walks the jaxpr and asks
  each for its initial state (the rules for that live in `INITS`, keyed by primitive name).
* *Reading it.* The interpreter's `Frame` carries the states of the step, read-only. A construct
  reads its own state before it draws, so nothing it reads depends on this step's draws.
* *Writing it.* A construct writes its next state into the `Sink` of the run it belongs to. A
  baseline is updated from the value of the term it multiplies, known only when that term ends,
  so it is `register`-ed when read and updated by the owner of the sink (the whole program, or
  one datapoint of `pv.plate`) from the term's final value.

State cannot be written where the rest of the program runs more than once or inside a JAX
transformation whose values cannot leave it (after a site whose strategy runs its continuation
several times, inside a `lax.cond` branch or a `lax.scan` body): there the interpreter's state
carries a ``barrier`` saying why, and `write` raises it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .errors import ProgramError


class Estimator(NamedTuple):
    """A stateful quantity of an estimator, as three pure functions (in the shape of optax's).

    Pass one as the baseline of `pv.reinforce` (``pv.reinforce(baseline=est)``): at each step
    the site receives ``read(state)`` as its baseline, and after the step the state is updated
    from the value of the term the baseline is subtracted from (the program's value, or one
    datapoint's inside `pv.plate`).
    """

    init: Callable[[], Any]  # () -> the state before the first step
    read: Callable[[Any], Any]  # state -> the value used at a step
    update: Callable[[Any, Any], Any]  # (value the state follows, state) -> the next state


class Sink:
    """The states written by one run of a program (or of one datapoint's term)."""

    def __init__(self):
        self.writes: dict[str, Any] = {}
        self.followers: dict[str, tuple[Estimator, Any]] = {}  # updated from the final value
        self.metrics: dict[str, Any] = {}  # the values given to `pv.report`
        self.learned: list[tuple[Any, Any]] = []  # (b, db) of learned baselines of this term
        self.losses: list[tuple[Any, Any]] = []  # auxiliary losses of finished inner terms

    def finish(self, value) -> dict[str, Any]:
        """The new states: those written, and each follower updated from `value`."""
        value = jax.lax.stop_gradient(value)
        new = {a: est.update(value, state) for a, (est, state) in self.followers.items()}
        new.update(self.writes)
        return new


    def aux_loss(self, value) -> tuple[Any, Any]:
        """The dual number of this run's auxiliary loss: the squared errors of its learned
        baselines against the term's final `value`, plus those of its inner terms."""
        from .learned_baseline import squared_error

        loss, tangent = squared_error(value, self.learned)
        for inner, inner_tangent in self.losses:
            loss, tangent = loss + inner, tangent + inner_tangent
        return loss, tangent


def read(frame_states, address: str, initial: Callable[[], Any]):
    """The state of `address` at this step; its initial state when the step was given none."""
    if frame_states is not None and address in frame_states:
        return frame_states[address]
    return initial()


def register(run_state, address: str, estimator: Estimator, state) -> None:
    """Records that the state at `address` follows the final value of the current term.

    `run_state` is the interpreter's state of the run; a run without a sink (the inner program
    of a log-expectation) has no term whose value the state could follow.
    """
    if run_state.sink is None:
        _unthreadable(address, run_state.barrier or "in a run that keeps no state")
    run_state.sink.followers[address] = (estimator, state)


def write(run_state, address: str, new_state) -> None:
    """Writes the next state of `address`, or raises where no state can leave the program."""
    if run_state.pure:
        return
    if run_state.barrier is not None or run_state.sink is None:
        _unthreadable(address, run_state.barrier or "in a run that keeps no state")
    sink = run_state.sink
    if address in sink.writes:
        raise ProgramError(
            f"two stateful estimators write the state at address {address!r}; give each "
            "pv.log_expectation its own address=..."
        )
    sink.writes[address] = jax.tree.map(jax.lax.stop_gradient, new_state)


def write_loss(run_state, loss) -> None:
    """Adds the auxiliary loss (a dual number) of an inner term (one plate) to this run's."""
    if run_state.pure:
        return
    if run_state.barrier is not None or run_state.sink is None:
        raise ProgramError(
            f"a pv.plate whose terms hold learned baselines is "
            f"{run_state.barrier or 'in a run that keeps no state'}, where their squared errors "
            "cannot leave the program. Move the plate out (before that site, outside the loop, "
            "branch or inner program)."
        )
    run_state.sink.losses.append(loss)


def write_metric(run_state, name: str, value) -> None:
    """Records the metric `name` of this run (nothing in a plain run)."""
    if run_state.pure:
        return
    if run_state.barrier is not None or run_state.sink is None:
        raise ProgramError(
            f"pv.report({name!r}, ...) is {run_state.barrier or 'in a run that keeps no state'}, "
            "where one metric would have several values. Report it before that site, outside "
            "the loop, branch or inner program."
        )
    if name in run_state.sink.metrics:
        raise ProgramError(f"the metric {name!r} is reported twice; give each its own name.")
    run_state.sink.metrics[name] = jax.lax.stop_gradient(value)


def _unthreadable(address, where):
    raise ProgramError(
        f"the stateful estimator at {address!r} is {where}, where its next state cannot be "
        "passed on to the next step. Move it out (before that site, outside the loop, branch or "
        "inner program), or use a stateless estimator there (pv.plug_in for a log-expectation; "
        "a constant or learned baseline for REINFORCE)."
    )


INITS: dict[str, Callable[[Any], list[tuple[str, Any]]]] = {}
"""Per primitive name: ``eqn -> [(address, initial state), ...]`` for its stateful parts."""


def init_states(jaxpr) -> dict[str, Any]:
    """The initial state of every stateful construct in `jaxpr` (bodies included), by address."""
    from ._compat import sub_jaxprs

    states: dict[str, Any] = {}
    for eqn in jaxpr.eqns:
        rule = INITS.get(eqn.primitive.name)
        if rule is not None:
            states.update(rule(eqn))
        for inner in sub_jaxprs(eqn):
            states.update(init_states(inner))
    return states


def mean_over_axis0(states):
    """Combines states computed once per datapoint (a vmapped estimate): their mean.

    Floating-point leaves are averaged; others (counters) are the same in every entry and keep
    the first.
    """

    def combine(x):
        x = jnp.asarray(x)
        return jnp.mean(x, 0) if jnp.issubdtype(x.dtype, jnp.inexact) else x[0]

    return jax.tree.map(combine, states)


def metric_mean(metrics):
    """Combines metrics reported once per datapoint: their means (booleans count as 0 or 1)."""
    return {name: jnp.mean(jnp.asarray(value, jnp.result_type(float)), 0)
            for name, value in metrics.items()}


__all__ = ["Estimator", "Sink", "init_states", "mean_over_axis0", "read", "register", "write",
           "write_loss"]
