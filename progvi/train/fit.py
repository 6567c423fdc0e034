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
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..adev.errors import ProgviError
from ..adev.static import hide, reveal
from ..adev.validation import validating
from .arguments import check_arguments, num_steps_of, resolve_batch_size
from .estimators import Estimator
from .progress import Progress, describe
from .sharding import check_batch_size, data_sharding
from .step import TrainState, _leading_size, make_step

if TYPE_CHECKING:
    from jax.sharding import Mesh, NamedSharding

    from ..adev.expectation import Expectation


class FitResult(NamedTuple):
    """What `fit` returns: the fitted state, its history, and where to resume from."""

    params: Any  # the fitted parameters
    opt_state: Any  # the optimizer's final state
    estimator_state: Any  # the final states of the stateful estimators, a dict keyed by address
    history: np.ndarray  # the objective's estimate at each step, before that step's update
    metrics: dict = {}  # per `pv.report` name, its value at each step (arrays like history)
    step: int = 0  # the number of updates applied since the run began (resume=... continues)
    key: np.ndarray | None = None  # the data of the run's key: a resumed fit must use it too
    order: Any = None  # the data order of the current epoch (None without data)
    interrupted: bool = False  # whether Ctrl-C stopped the fit before num_steps


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
    sharding: Any = None
    validation: bool = False  # pv.validation() when traced: a chunk compiled without it differs


def fit(
    key: jax.Array,
    objective: Expectation,
    params: Any,
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
    progress: bool | None = None,
    resume: FitResult | str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    sharding: Mesh | NamedSharding | None = None,
) -> FitResult:
    """Fits `params` by stochastic gradient ascent or descent on an expectation program.

    Each step is the step of `make_step`: the objective is called as
    ``objective.estimate(key, params, batch, *extra_args)`` (``batch`` left out without
    `data`). The program's stateful estimators (`pv.compositional`, a moving-average baseline)
    are found in it, their states created and threaded from step to step, and returned in
    ``FitResult.estimator_state``, keyed by address; the values it records with `pv.report`
    are in ``FitResult.metrics``. For a dataset the recommended form is a program for one
    datapoint with ``per_datapoint=True``: it is vmapped over the minibatch, one key per
    datapoint, and the estimates are averaged.

    Minibatches of `batch_size` are drawn without replacement from a fresh permutation of the
    data each epoch; when `batch_size` does not divide the number of datapoints, the last
    ``N mod batch_size`` of each epoch's permutation are left out of that epoch, so that every
    batch has one shape. `data` may be one array or a pytree of arrays with a shared leading axis.

    Steps run in chunks of at most `chunk_size` under one compiled loop; a chunk also ends at
    every callback and checkpoint, and chunks of every length share one compilation. A second
    `fit` with the same objective, optimizer and estimator objects, data of the same shapes and
    the same `chunk_size` compiles nothing (a new ``optax.adam(...)`` is a new optimizer: keep
    one). A step whose objective or updated params
    are not finite stops training: the chunk that contains it is replayed with a check at every
    step to find it, so runs that stay finite pay for one check per chunk.

    Resuming is exact: ``fit(key, ..., num_steps=n, resume=result)`` continues `result` for `n`
    more steps, with the same key schedule and data order, so that two fits of ``N/2`` steps
    give the params, optimizer state, estimator states and history of one fit of ``N`` steps bit
    for bit. With `checkpoint_dir`, the whole training state is saved there (orbax-checkpoint)
    every `checkpoint_every` steps, at the end and on Ctrl-C, and ``resume=checkpoint_dir``
    continues from the newest checkpoint. Ctrl-C stops the fit at the end of the running chunk
    and returns what was trained, with ``interrupted=True``; a second Ctrl-C aborts.

    Args:
      key: a `jax.random` key; every draw and every shuffle derives from it. A resumed fit
        must be given the key of the run it resumes.
      objective: a ``@pv.expectation`` program returning a scalar.
      params: the initial parameters, any pytree of arrays (an equinox or flax.nnx module
        included: an equinox module's functions are carried along, not fitted); with
        `resume`, None (or the resumed result's params, or, for a checkpoint, the initial
        params of the run, whose structure rebuilds the saved state).
      optimizer: any optax gradient transformation; those that take the loss
        (`optax.contrib.reduce_on_plateau`, `optax.polyak_sgd`, `optax.lbfgs`) receive it,
        and `optax.lookahead` works with ``optax.LookaheadParams`` as params.
      direction: ``"maximize"`` or ``"minimize"`` (required).
      num_steps: the number of steps (more steps, when resuming); give it or `num_epochs`.
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
      progress: whether to show a progress bar (the objective's name, its overridden
        strategies and its current value, redrawn a few times a second at most); default: only
        when standard error is a terminal.
      resume: a `FitResult` to continue, or a checkpoint directory.
      checkpoint_dir: where to save checkpoints (created if needed).
      checkpoint_every: the checkpoint period in steps; default: `chunk_size`.
      sharding: data parallelism over several devices: a `jax.sharding.Mesh` or a
        `NamedSharding` for the batch (see `make_step`); the result equals the single-device
        one.

    Returns:
      A `FitResult` with the final params, optimizer state, estimator states, the history of
      objective values and metrics, and what a resumed fit needs.

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
      >>> adam = optax.adam(optax.cosine_decay_schedule(0.05, 2000))
      >>> result = pv.fit(
      ...     jax.random.key(0), local_elbo, {"m": 0.0, "log_s": 0.0}, adam,
      ...     direction="maximize", num_steps=1000, data=xs, batch_size=2, per_datapoint=True)
      >>> result = pv.fit(  # 1000 more steps: the same as one fit of 2000
      ...     jax.random.key(0), local_elbo, None, adam, direction="maximize", num_steps=1000,
      ...     data=xs, batch_size=2, per_datapoint=True, resume=result)
      >>> print(f"{result.params['m']:.1f}")  # exact posterior: N(12/5, 1/5)
      2.4
      >>> print(f"{jnp.exp(result.params['log_s']) ** 2:.1f}")
      0.2
    """
    check_arguments(key, params, resume, extra_args, callback, num_steps=num_steps,
                    num_epochs=num_epochs, batch_size=batch_size, chunk_size=chunk_size,
                    callback_every=callback_every, checkpoint_every=checkpoint_every)
    # make_step checks the objective, optimizer, direction and estimator before any tracing.
    train = make_step(objective, optimizer, direction=direction, per_datapoint=per_datapoint,
                      estimator=estimator, sharding=sharding)
    data = None if data is None else jax.tree.map(jnp.asarray, data)
    num_data = None if data is None else _leading_size(data)
    batch_size = resolve_batch_size(batch_size, num_data)
    num_steps = num_steps_of(num_steps, num_epochs, num_data, batch_size)
    if chunk_size < 1:
        raise ValueError(f"fit: chunk_size={chunk_size!r} must be a positive number of steps.")
    if callback_every is not None and callback is None:
        raise ValueError("fit: callback_every was given without a callback; pass callback=f.")
    every = callback_every or chunk_size
    if every < 1:
        raise ValueError(f"fit: callback_every={every!r} must be a positive number of steps.")
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("fit: checkpoint_every was given without checkpoint_dir; pass "
                         "checkpoint_dir=path.")
    save_every = checkpoint_every or chunk_size
    if save_every < 1:
        raise ValueError(f"fit: checkpoint_every={save_every!r} must be a positive number of "
                         "steps.")

    layout = data_sharding(sharding)
    check_batch_size(layout, batch_size, "fit")
    if layout is not None and data is not None:
        # Replicated over the mesh: on several hosts, every process holds the same data.
        data = jax.device_put(data, _replicated(layout))
    spec = _Spec(objective, optimizer, direction, per_datapoint, estimator, batch_size, layout,
                 validating())
    step_key, shuffle_key = jax.random.split(key)
    key_data = _key_data(key)
    # Ctrl-C from here on (compilation included) asks the fit to stop after the running chunk.
    with _Interrupt() as interrupt:
        first = None if data is None else jax.tree.map(lambda a: a[:batch_size], data)
        start = _start(resume, params, key_data, lambda p: train.init(p, first, *extra_args),
                       num_data)
        state, order, history, metrics = start
        if layout is not None:
            state, order = jax.device_put((state, order), _replicated(layout))
        done = int(state.step)
        total = done + num_steps
        checkpoints = None if checkpoint_dir is None else _checkpoints(checkpoint_dir)
        saved = None
        bar = Progress(total, done, describe(spec.objective, spec.direction), progress)
        try:
            while done < total and not interrupt.requested:
                end = min(total, _next_multiple(done, chunk_size), _next_multiple(done, every),
                          _next_multiple(done, save_every) if checkpoints else total)
                length = end - done
                run = functools.partial(_run_chunk, (state, order), step_key, shuffle_key, data,
                                        tuple(extra_args), np.int32(length), spec=spec,
                                        capacity=chunk_size)
                (new_state, new_order), (values, chunk_metrics), finite = run(guarded=False)
                if not bool(finite):
                    # Replay the chunk from its start, checking every step, to find the first
                    # bad one and the state before it. Only a failing run pays for the checks.
                    (new_state, new_order), (values, chunk_metrics), failed = run(guarded=True)
                    bad, values = int(failed), np.asarray(values)
                    if bad >= 0:
                        kept = bad - done
                        history.append(values[:kept])
                        _extend(metrics, chunk_metrics, kept)
                        result = _result(new_state, history, metrics, key_data, new_order)
                        raise NonFiniteError(_nonfinite_message(bad, values[kept]), bad, result)
                state, order = new_state, new_order
                values = np.asarray(values)[:length]
                history.append(values)
                _extend(metrics, chunk_metrics, length)
                bar.update(end - done, float(values.mean()))
                done = end
                if checkpoints and (done % save_every == 0 or done == total):
                    checkpoints.save(done, state, order, key_data, _concatenated(history),
                                     _joined(metrics))
                    saved = done
                if callback is not None and done % every == 0:
                    if callback(done, state, float(values[-1])) is True:
                        break
            stopped = interrupt.requested and done < total
            if stopped and checkpoints and saved != done:
                checkpoints.save(done, state, order, key_data, _concatenated(history),
                                 _joined(metrics))
        finally:
            bar.close()
            if checkpoints:
                checkpoints.close()
        return _result(state, history, metrics, key_data, order, interrupted=stopped)


class _Interrupt:
    """Within its block, the first Ctrl-C is a request to stop after the running chunk."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _start(resume, params, key_data, init, num_data):
    """``(state, order, history list, metrics lists)`` to start from: fresh, or resumed."""
    fresh_order = None if num_data is None else jnp.zeros((num_data,), jnp.int32)
    if resume is None:
        return init(params), fresh_order, [], {}
    if isinstance(resume, FitResult):
        if params is not None and params is not resume.params:
            raise ValueError(
                "fit(resume=result): params must be None (or result.params): the resumed fit "
                "continues from result's params."
            )
        _check_key(resume.key, key_data, "the resumed FitResult")
        state = TrainState(hide(resume.params), resume.opt_state, resume.estimator_state,
                           jnp.asarray(resume.step, jnp.int32))
        history = [np.asarray(resume.history)]
        metrics = {name: [np.asarray(v)] for name, v in resume.metrics.items()}
        return state, (fresh_order if resume.order is None else resume.order), history, metrics
    if isinstance(resume, (str, os.PathLike)):
        if params is None:
            raise ValueError(
                f"fit(resume={os.fspath(resume)!r}): pass the run's initial params as params: "
                "their structure (with the optimizer's and the program's) rebuilds the saved "
                "training state."
            )
        from .checkpoint import restore

        saved = restore(resume, init(params))
        _check_key(saved["key"], key_data, f"the checkpoint in {os.fspath(resume)!r}")
        order = fresh_order if saved["order"] is None else jnp.asarray(saved["order"])
        metrics = {name: [v] for name, v in saved["metrics"].items()}
        return saved["state"], order, [saved["history"]], metrics
    raise TypeError(
        f"fit: resume={type(resume).__name__}; it must be a FitResult or a checkpoint directory."
    )


def _check_key(saved, key_data, where):
    if saved is None or not np.array_equal(np.asarray(saved), key_data):
        raise ValueError(
            f"fit(resume=...): the key differs from the key of {where}. A resumed run continues "
            "that run's key schedule: pass the same key as the first fit."
        )


def _key_data(key) -> np.ndarray:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _checkpoints(directory):
    from .checkpoint import Checkpoints

    return Checkpoints(directory)


def _extend(metrics, chunk_metrics, count):
    for name, values in chunk_metrics.items():
        metrics.setdefault(name, []).append(np.asarray(values)[:count])


def _replicated(layout):
    return jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec())


def _concatenated(history):
    return np.concatenate(history) if history else np.zeros((0,), np.float32)


def _joined(metrics):
    return {name: np.concatenate(parts) for name, parts in metrics.items()}


def _result(state, history, metrics, key_data, order, interrupted=False):
    return FitResult(
        params=reveal(state.params), opt_state=state.opt_state,
        estimator_state=state.estimator_state,
        history=_concatenated(history),
        metrics=_joined(metrics), step=int(state.step), key=key_data, order=order,
        interrupted=interrupted,
    )


@functools.partial(jax.jit, static_argnames=("spec", "capacity", "guarded"))
def _run_chunk(carry, step_key, shuffle_key, data, extra, length, *, spec: _Spec, capacity: int,
               guarded: bool):
    """`length` steps: ``((state, order), (values, metrics), check)``.

    `length` is traced, so that chunks of every length up to `capacity` share one compiled
    program; ``values`` and ``metrics`` have `capacity` rows, of which the first `length` are
    the steps'. Unguarded, ``check`` says whether every value and the final params are finite:
    one reduction per chunk. Guarded, every step is checked, the first non-finite one is undone
    and the state frozen before it, and ``check`` is that step (-1 if none).
    """
    train = make_step(spec.objective, spec.optimizer, direction=spec.direction,
                      per_datapoint=spec.per_datapoint, estimator=spec.estimator,
                      sharding=spec.sharding)

    @jax.jit  # traced once: for its output shapes below, then in the loop
    def one(state, order, failed):
        t = state.step
        batch = None
        if data is not None:
            order, batch = _minibatch(data, order, shuffle_key, t, spec.batch_size)
        new, value, metrics = train.step_with_metrics(state, jax.random.fold_in(step_key, t),
                                                      batch, *extra)
        if guarded:
            finite = jnp.isfinite(value) & _all_finite(new.params, exact=True)
            failed = jnp.where((failed < 0) & ~finite, t, failed)
            new = jax.tree.map(lambda n, o: jnp.where(failed < 0, n, o), new, state)
        return (new, order, failed), (value, metrics)

    state, order = carry
    failed = jnp.asarray(-1, jnp.int32)
    outputs = jax.eval_shape(one, state, order, failed)[1]
    rows = jax.tree.map(lambda s: jnp.zeros((capacity, *s.shape), s.dtype), outputs)

    def body(i, loop):
        state, order, failed, rows = loop
        (state, order, failed), out = one(state, order, failed)
        rows = jax.tree.map(lambda r, o: jax.lax.dynamic_update_index_in_dim(r, o, i, 0),
                            rows, out)
        return state, order, failed, rows

    state, order, failed, (values, metrics) = jax.lax.fori_loop(
        0, length, body, (state, order, failed, rows))
    check = failed if guarded else jnp.all(jnp.isfinite(values)) & _all_finite(state.params)
    return (state, order), (values, metrics), check


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
