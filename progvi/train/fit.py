"""`fit`: maximize or minimize an expectation program with an optax optimizer.

Steps run in jit-compiled chunks under `lax.scan`; between chunks the host updates the progress
bar, records the history, calls the callback and checks that training stayed finite. The random
stream does not depend on the chunking: step ``t`` draws with ``fold_in(step_key, t)`` and epoch
``e`` visits the data in the order ``permutation(fold_in(shuffle_key, e), N)``, where
``step_key, shuffle_key = jax.random.split(key)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..adev.errors import ProgviError
from .estimators import Estimator
from .step import TrainState, _leading_size, make_step


class FitResult(NamedTuple):
    """What `fit` returns."""

    params: Any  # the fitted parameters
    opt_state: Any  # the optimizer's final state, to resume with
    estimator_state: Any  # the final states of the stateful estimators, a dict keyed by address
    history: np.ndarray  # the objective's estimate at each step, before that step's update


class NonFiniteError(ProgviError, FloatingPointError):
    """Training produced a nan or inf; ``.step`` is where, ``.result`` the state just before."""

    def __init__(self, message: str, step: int, result: FitResult):
        super().__init__(message)
        self.step = step  # the first step whose value or updated params were not finite
        self.result = result  # the state at the start of `step` (finite), the history before it


class _Spec(NamedTuple):
    """The static part of a fit: equal specs share one compiled chunk."""

    objective: Any
    optimizer: Any
    direction: str
    per_datapoint: bool
    estimator: Any
    batch_size: int | None


def fit(
    key,
    objective,
    params,
    optimizer: optax.GradientTransformation,
    *,
    direction: str,
    num_steps: int | None = None,
    num_epochs: int | None = None,
    data: Any = None,
    batch_size: int | None = None,
    per_datapoint: bool = False,
    estimator: Estimator | None = None,
    extra_args: tuple = (),
    callback: Callable[[int, TrainState, float], Any] | None = None,
    callback_every: int | None = None,
    chunk_size: int = 100,
    progress: bool = True,
) -> FitResult:
    """Fits `params` by stochastic gradient ascent or descent on an expectation program.

    Each step is the step of `make_step`: the objective is called as
    ``objective.estimate(key, params, batch, *extra_args)`` (``batch`` left out without
    `data`). The program's stateful estimators (`pv.compositional`, a moving-average baseline)
    are found in it, their states created and threaded from step to step, and returned in
    ``FitResult.estimator_state``, keyed by address. For a dataset the recommended
    form is a program for one datapoint with ``per_datapoint=True``: it is vmapped over the
    minibatch, one key per datapoint, and the estimates are averaged.

    Minibatches of `batch_size` are drawn without replacement from a fresh permutation of the
    data each epoch; when `batch_size` does not divide the number of datapoints, the last
    ``N mod batch_size`` of each epoch's permutation are left out of that epoch, so that every
    batch has one shape. `data` may be one array or a pytree of arrays with a shared leading axis.

    Steps are compiled in chunks of `chunk_size` under `lax.scan`; a chunk also ends at every
    callback, so prefer a `callback_every` that is a multiple or a divisor of `chunk_size` (each
    distinct chunk length compiles once). A second `fit` with the same objective, optimizer and
    estimator objects and data of the same shapes compiles nothing (a new ``optax.adam(...)`` is
    a new optimizer: keep one). A step whose objective or updated params are not finite stops
    training: the chunk that contains it is replayed with a check at every step to find it, so
    runs that stay finite pay for one check per chunk.

    Args:
      key: a `jax.random` key; every draw and every shuffle derives from it.
      objective: a ``@pv.expectation`` program returning a scalar.
      params: the initial parameters, any pytree of arrays.
      optimizer: any optax gradient transformation.
      direction: ``"maximize"`` or ``"minimize"`` (required).
      num_steps: the number of steps; give it or `num_epochs`.
      num_epochs: the number of passes over `data`.
      data: the dataset (leading axis: datapoints), or None for an objective without data.
      batch_size: the minibatch size; default: the whole dataset.
      per_datapoint: whether `objective` scores one datapoint (vmapped and averaged).
      estimator: the older form of a stateful baseline, passed to the program as an argument
        (see `make_step`); prefer ``pv.reinforce(baseline=...)`` in the program.
      extra_args: further arguments passed to the program after the others.
      callback: called as ``callback(step, state, value)`` after every `callback_every` steps,
        with the number of steps done, the `TrainState` and the last step's objective value;
        returning True stops training there.
      callback_every: the callback's period in steps; default: `chunk_size`.
      chunk_size: the number of steps per compiled chunk.
      progress: whether to show a progress bar with the current objective.

    Returns:
      A `FitResult` with the final params, optimizer state, estimator state and the history of
      objective values.

    Raises:
      NonFiniteError: when a step's objective or updated params are nan or inf. Its ``.step``
        is that step; its ``.result`` holds the params and optimizer state at the start of it
        (all finite: the point to reproduce the failure from) and the history before it.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> xs = jnp.array([2.5, 3.5, 3.0, 3.0])
      >>> @pv.expectation
      ... def local_elbo(phi, x):  # z ~ N(0, 1), x_i ~ N(z, 1); guide N(m, exp(log_s))
      ...     q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
      ...     z = pv.sample("z", q)
      ...     prior_term = dist.Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)
      ...     return dist.Normal(z, 1.0).log_prob(x) + prior_term / len(xs)
      >>> result = pv.fit(
      ...     jax.random.key(0), local_elbo, {"m": 0.0, "log_s": 0.0},
      ...     optax.adam(optax.cosine_decay_schedule(0.05, 2000)), direction="maximize",
      ...     num_steps=2000, data=xs, batch_size=2, per_datapoint=True, progress=False)
      >>> print(f"{result.params['m']:.1f}")  # exact posterior: N(12/5, 1/5)
      2.4
      >>> print(f"{jnp.exp(result.params['log_s']) ** 2:.1f}")
      0.2
    """
    # make_step checks the objective, optimizer, direction and estimator before any tracing.
    train = make_step(objective, optimizer, direction=direction, per_datapoint=per_datapoint,
                      estimator=estimator)
    data = None if data is None else jax.tree.map(jnp.asarray, data)
    num_data = None if data is None else _leading_size(data)
    batch_size = _batch_size(batch_size, num_data)
    num_steps = _num_steps(num_steps, num_epochs, num_data, batch_size)
    if chunk_size < 1:
        raise ValueError(f"fit: chunk_size={chunk_size!r} must be a positive number of steps.")
    if callback_every is not None and callback is None:
        raise ValueError("fit: callback_every was given without a callback; pass callback=f.")
    every = callback_every or chunk_size
    if every < 1:
        raise ValueError(f"fit: callback_every={every!r} must be a positive number of steps.")

    spec = _Spec(objective, optimizer, direction, per_datapoint, estimator, batch_size)
    step_key, shuffle_key = jax.random.split(key)
    first = None if data is None else jax.tree.map(lambda a: a[:batch_size], data)
    state = train.init(params, first, *extra_args)
    order = None if data is None else jnp.zeros((num_data,), jnp.int32)
    history: list[np.ndarray] = []
    done = 0
    with tqdm(total=num_steps, disable=not progress, desc=direction, unit="step") as bar:
        while done < num_steps:
            end = min(num_steps, _next_multiple(done, chunk_size), _next_multiple(done, every))
            run = functools.partial(_run_chunk, (state, order), step_key, shuffle_key, data,
                                    tuple(extra_args), spec=spec, length=end - done)
            (state, order), values, finite = run(guarded=False)
            if not bool(finite):
                # Replay the chunk from its start, checking every step, to find the first bad
                # one and the state before it. Only a failing run pays for the checks.
                (state, order), values, failed = run(guarded=True)
                bad, values = int(failed), np.asarray(values)
                if bad >= 0:
                    history.append(values[: bad - done])
                    result = FitResult(state.params, state.opt_state, state.estimator_state,
                                       np.concatenate(history))
                    raise NonFiniteError(_nonfinite_message(bad, values[bad - done]), bad,
                                         result)
            values = np.asarray(values)
            history.append(values)
            bar.update(end - done)
            bar.set_postfix(objective=f"{values.mean():.5g}")
            done = end
            if callback is not None and done % every == 0:
                if callback(done, state, float(values[-1])) is True:
                    break
    return FitResult(state.params, state.opt_state, state.estimator_state,
                     np.concatenate(history) if history else np.zeros((0,), np.float32))


@functools.partial(jax.jit, static_argnames=("spec", "length", "guarded"))
def _run_chunk(carry, step_key, shuffle_key, data, extra, *, spec: _Spec, length: int,
               guarded: bool):
    """`length` steps under `lax.scan`: ``((state, order), values, check)``.

    Unguarded, ``check`` says whether every value and the final params are finite: one
    reduction per chunk. Guarded, every step is checked, the first non-finite one is undone and
    the state frozen before it, and ``check`` is that step (-1 if none).
    """
    train = make_step(spec.objective, spec.optimizer, direction=spec.direction,
                      per_datapoint=spec.per_datapoint, estimator=spec.estimator)

    def body(carry, _):
        (state, order), failed = carry
        t = state.step
        batch = None
        if data is not None:
            order, batch = _minibatch(data, order, shuffle_key, t, spec.batch_size)
        new, value = train.step(state, jax.random.fold_in(step_key, t), batch, *extra)
        if guarded:
            finite = jnp.isfinite(value) & _all_finite(new.params, exact=True)
            failed = jnp.where((failed < 0) & ~finite, t, failed)
            new = jax.tree.map(lambda n, o: jnp.where(failed < 0, n, o), new, state)
        return ((new, order), failed), value

    ((state, order), failed), values = jax.lax.scan(
        body, (carry, jnp.asarray(-1, jnp.int32)), length=length
    )
    check = failed if guarded else jnp.all(jnp.isfinite(values)) & _all_finite(state.params)
    return (state, order), values, check


def _minibatch(data, order, shuffle_key, t, batch_size):
    """Step t's batch; a new epoch draws a new permutation (once per epoch, not per step)."""
    num_data = _leading_size(data)
    per_epoch = num_data // batch_size
    epoch, position = t // per_epoch, t % per_epoch
    order = jax.lax.cond(
        position == 0,
        lambda: jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), num_data),
        lambda: order,
    )
    index = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
    return order, jax.tree.map(lambda a: jnp.take(a, index, axis=0), data)


def _all_finite(tree, exact: bool = False) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if exact:
        return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves],
                                jnp.asarray(True))
    # The fast path's test: a sum is nan or inf when a term is (or when it overflows, which
    # only costs a replay with the exact test), and a sum vectorizes better than an all-reduce.
    return jnp.isfinite(sum((jnp.sum(x) for x in leaves), jnp.zeros((), jnp.float32)))


def _next_multiple(done, period):
    return (done // period + 1) * period


def _batch_size(batch_size, num_data):
    if num_data is None:
        if batch_size is not None:
            raise ValueError("fit: batch_size was given without data; pass data=your_array.")
        return None
    if batch_size is None:
        return num_data
    if not 1 <= batch_size <= num_data:
        raise ValueError(
            f"fit: batch_size={batch_size!r} must be between 1 and the number of datapoints, "
            f"{num_data}."
        )
    return batch_size


def _num_steps(num_steps, num_epochs, num_data, batch_size):
    if (num_steps is None) == (num_epochs is None):
        raise ValueError(
            "fit: give exactly one of num_steps=... and num_epochs=... (got "
            f"num_steps={num_steps!r}, num_epochs={num_epochs!r})."
        )
    if num_epochs is not None:
        if num_data is None:
            raise ValueError("fit: num_epochs needs data; without data, pass num_steps.")
        num_steps = num_epochs * (num_data // batch_size)
    if num_steps < 0:
        raise ValueError(f"fit: num_steps={num_steps!r} must not be negative.")
    return num_steps


def _nonfinite_message(step, value):
    what = "objective" if not math.isfinite(float(value)) else "updated parameters"
    return (
        f"fit stopped at step {step}: the {what} became nan or inf (the objective's estimate "
        f"there was {float(value)}). The error's .result holds the finite params at the start "
        f"of step {step} (after {step} updates) and the history before it. Usual fixes: a "
        "smaller learning rate, optax.chain(optax.clip_by_global_norm(1.0), ...), or guarding a "
        "log or a division by zero in the program."
    )


__all__ = ["FitResult", "NonFiniteError", "fit"]
