"""One training step as a pure function: `make_step` and the state it threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..adev.errors import ProgramError
from ..adev.state import mean_over_axis0, metric_mean
from ..adev.static import hide
from .estimators import Estimator
from .sharding import constrain, data_sharding

if TYPE_CHECKING:
    from jax.sharding import Mesh, NamedSharding

    from ..adev.expectation import Expectation

DIRECTIONS = {"maximize": -1.0, "minimize": 1.0}  # the sign that turns each into a loss for optax
ARGUMENT = "estimator="  # where the state of make_step's `estimator=` argument is kept


class TrainState(NamedTuple):
    """Everything a training step reads and writes."""

    params: Any  # the parameters being fitted (functions in them wrapped in a callable Static)
    opt_state: Any  # the optax optimizer's state
    estimator_state: Any  # the states of the stateful estimators, a dict keyed by address
    step: jax.Array  # the number of updates applied so far (int32 scalar)


class TrainStep(NamedTuple):
    """A pure training step and the function that builds the state it starts from."""

    init: Callable[..., TrainState]  # (params, batch=None, *extra) -> the state before step 1
    step: Callable[..., tuple[TrainState, jax.Array]]  # (state, key, batch, *extra) -> (state, v)
    step_with_metrics: Callable[..., tuple]  # the same -> (state, value, metrics of pv.report)


def make_step(
    objective: Expectation,
    optimizer: optax.GradientTransformation,
    *,
    direction: str,
    per_datapoint: bool = False,
    estimator: Estimator | None = None,
    sharding: Mesh | NamedSharding | None = None,
) -> TrainStep:
    """A pure, jittable training step for an expectation program, for users with their own loop.

    The step draws one estimate of the objective and its gradient with respect to the params,
    hands the gradient (negated when maximizing) to the optax `optimizer`, and moves every
    stateful estimator of the program (`pv.compositional`, a moving-average baseline, your
    own) to its next state. The parameters of learned baselines (`pv.learned_baseline`) are
    trained on the program's auxiliary loss, their squared errors, which the step adds to the
    loss it minimizes in either direction (``sign * objective + aux_loss``, the sign -1 for
    ``"maximize"``). The objective is called as

    ``objective.estimate_with_state(key, states, params, batch, *extra)``

    where ``batch`` is left out when it is None. With ``per_datapoint=True`` the program
    describes one datapoint: it is vmapped over the leading axis of ``batch`` with one key per
    datapoint (``jax.random.split(key, batch_size)``) and the estimates are averaged, which JAX
    differentiates once for the whole batch; the next states are the mean of the datapoints'.

    The states live in ``TrainState.estimator_state``, a dict keyed by the address of the
    construct that owns each; ``init`` finds them by tracing the program, which needs its
    arguments: pass a batch, ``init(params, batch)``, when the program takes data. (Without
    one, a program that cannot be traced on the params alone is taken to have no stateful
    estimators; if it has some, the step says so.)

    Args:
      objective: a ``@pv.expectation`` program (anything with ``estimate(key, params, ...)``)
        returning a scalar.
      optimizer: any optax gradient transformation, e.g. ``optax.adam(1e-3)``.
      direction: ``"maximize"`` (an ELBO) or ``"minimize"`` (a loss); required, so that the sign
        is never a guess.
      per_datapoint: whether `objective` scores one datapoint and is averaged over the batch.
      sharding: data parallelism: a `jax.sharding.Mesh` (the batch's leading axis is split
        over all its devices) or a `NamedSharding` for the batch; params stay replicated and
        the result equals the single-device one. The batch size must divide evenly.
      estimator: the older form of a stateful baseline, a `pv.train.Estimator` whose
        ``read`` of its state the program receives as an argument after ``batch``, updated
        from the step's objective value (its state is kept under the key ``"estimator="``).
        Prefer ``pv.reinforce(baseline=estimator)`` in the program.

    Returns:
      A `TrainStep`: ``init(params, batch=None, *extra) -> TrainState``,
      ``step(state, key, batch=None, *extra) -> (state, value)``, where ``value`` is the
      objective's estimate at the params before the update, and ``step_with_metrics``, the same
      step returning ``(state, value, metrics)`` with the program's `pv.report` values. All are
      pure: wrap a step in `jax.jit` or call it inside `lax.scan`.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> @pv.expectation
      ... def elbo(phi, x):  # model z ~ N(0, 1), x ~ N(z, 1); guide N(phi, 1)
      ...     z = pv.sample("z", dist.Normal(phi, 1.0))
      ...     return dist.Normal(z, 1.0).log_prob(x) + dist.Normal(0.0, 1.0).log_prob(z)
      >>> train = pv.make_step(elbo, optax.adam(0.1), direction="maximize")
      >>> step = jax.jit(train.step)
      >>> state = train.init(jnp.array(0.0), jnp.array(3.0))
      >>> for t in range(300):
      ...     state, value = step(state, jax.random.key(t), jnp.array(3.0))
      >>> print(f"{state.params:.1f}")  # the exact posterior mean is 1.5
      1.5
    """
    sign = _sign(direction, "make_step")
    _check_objective(objective, "make_step")
    _check_optimizer(optimizer)
    if estimator is not None and not isinstance(estimator, Estimator):
        raise TypeError(
            f"make_step: estimator={estimator!r} is not a pv.train.Estimator. Pass e.g. "
            "estimator=pv.train.moving_average_baseline(0.9), or leave it out."
        )

    layout = data_sharding(sharding)

    def argument(states):
        if estimator is None:
            return ()
        return (estimator.read(estimator.init() if states is None else states[ARGUMENT]),)

    def init(params, batch=None, *extra) -> TrainState:
        # An equinox module's functions travel in the structure, so the state is all arrays.
        params = hide(params)
        check_params(params, "make_step(...).init")
        # Python floats would enter as weakly typed arrays and leave the first step strongly
        # typed; fixing the types here keeps a jitted step on one compilation.
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), params)
        at = params.fast if isinstance(params, optax.LookaheadParams) else params
        states = program_states(objective, per_datapoint, at, batch, argument(None), extra)
        if estimator is not None:
            states[ARGUMENT] = estimator.init()
        return TrainState(
            params=params,
            opt_state=optimizer.init(params),
            estimator_state=states,
            step=jnp.zeros((), jnp.int32),
        )

    def step_with_metrics(state: TrainState, key, batch=None, *extra):
        states = state.estimator_state
        if not isinstance(states, dict):
            raise TypeError(
                f"make_step: state.estimator_state is {type(states).__name__}, but it must be the "
                "dict of estimator states that init(params, batch) creates."
            )
        own = {a: s for a, s in states.items() if a != ARGUMENT}
        est_args = argument(states)
        batch = constrain(batch, layout)

        def value_of(params):
            return objective_value(objective, per_datapoint, key, params, batch, est_args, extra,
                                   own)

        def loss(params):
            value, new_states, metrics, aux_loss = value_of(params)
            # The sign seeds the backward pass, so maximizing costs no extra pass over the grads.
            # The auxiliary loss (learned baselines' squared errors) is minimized in either
            # direction; the objective's gradient for the baselines' params is zero.
            return sign * value + aux_loss, (aux_loss, value, new_states, metrics)

        # optax.lookahead trains LookaheadParams: the gradient is taken at the fast params.
        lookahead = isinstance(state.params, optax.LookaheadParams)
        at = state.params.fast if lookahead else state.params
        (total, (_, value, new_states, metrics)), grads = jax.value_and_grad(
            loss, has_aux=True)(at)
        extra_args = {}
        if isinstance(optimizer, optax.GradientTransformationExtraArgs):
            # Transformations that need the loss (reduce_on_plateau, polyak_sgd, lbfgs) get
            # it; value_fn re-estimates it with the same key and batch, as a line search needs.
            extra_args = dict(value=total, grad=grads, value_fn=lambda p: loss(p)[0])
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **extra_args)
        missing = sorted(set(new_states) - set(own))
        if missing:
            raise ProgramError(
                f"the program holds stateful estimators at {missing} whose states the step was "
                "not given. Create the state with train.init(params, batch) (a batch of the "
                "data, and the extra arguments), so that init can trace the program and find "
                "them."
            )
        new_states = dict(new_states)
        if estimator is not None:
            new_states[ARGUMENT] = estimator.update(value, states[ARGUMENT])
        new = TrainState(
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            estimator_state=new_states,
            step=state.step + 1,
        )
        return new, value, metrics

    def step(state: TrainState, key, batch=None, *extra):
        new, value, _ = step_with_metrics(state, key, batch, *extra)
        return new, value

    return TrainStep(init=init, step=step, step_with_metrics=step_with_metrics)


def program_states(objective, per_datapoint, params, batch, est_args, extra):
    """The initial states of the program's stateful estimators, by address."""
    init_state = getattr(objective, "init_state", None)
    if init_state is None:
        return {}
    if batch is not None and per_datapoint:
        _leading_size(batch)
        batch = jax.tree.map(lambda a: a[0], batch)
    data = () if batch is None else (batch,)
    try:
        return dict(init_state(params, *data, *est_args, *extra))
    except TypeError:
        if batch is None:
            return {}  # the program needs its data to be traced; the step checks for states
        raise


def objective_value(objective, per_datapoint, key, params, batch, est_args, extra, states=None):
    """``(estimate, next states, metrics, auxiliary loss)`` on one batch; see `make_step`."""
    name = getattr(objective, "__name__", repr(objective))
    evaluate = getattr(objective, "evaluate", None)

    def one(key, *data):
        if evaluate is None:
            zero = jnp.zeros((), jnp.result_type(float))
            return objective.estimate(key, params, *data, *est_args, *extra), {}, {}, zero
        out = evaluate(key, states, params, *data, *est_args, *extra)
        return out.value, out.state, out.metrics, jnp.asarray(out.aux_loss)

    if not per_datapoint:
        value, new_states, metrics, aux_loss = one(key, *(() if batch is None else (batch,)))
        if jnp.shape(value) != ():
            given = ("" if batch is None else " (given a batch of shape(s) "
                     f"{[tuple(jnp.shape(leaf)) for leaf in jax.tree.leaves(batch)]})")
            raise ProgramError(
                f"objective {name!r} returned shape {jnp.shape(value)}{given}; training needs a "
                "scalar. "
                "If it scores each datapoint of the batch, pass per_datapoint=True with a "
                "program for one datapoint, or return jnp.mean of the values."
            )
        return value, new_states, metrics, aux_loss
    if batch is None:
        raise ValueError(
            f"per_datapoint=True but no batch was given for objective {name!r}: pass data "
            "(fit) or a batch (the step), or set per_datapoint=False."
        )
    size = _leading_size(batch)
    values, new_states, metrics, aux_losses = jax.vmap(one)(jax.random.split(key, size), batch)
    if values.shape != (size,):
        shapes = [tuple(jnp.shape(leaf)[1:]) for leaf in jax.tree.leaves(batch)]
        raise ProgramError(
            f"objective {name!r} returned shape {values.shape[1:]} for one datapoint, but with "
            "per_datapoint=True it must return a scalar. It was given one datapoint of shape "
            f"{shapes[0] if len(shapes) == 1 else shapes} (the data without its leading axis): "
            "if the data has the wrong shape (e.g. (N, 3) where the program takes a scalar x), "
            "reshape it; if the program scores several values per datapoint, return their sum."
        )
    return (jnp.mean(values), mean_over_axis0(new_states), metric_mean(metrics),
            jnp.mean(aux_losses))


def _leading_size(batch) -> int:
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "the arrays of a batch must share a leading (datapoint) axis, but their leading sizes "
            f"are {sorted(sizes, key=str)}. Pass e.g. (x, y) with x.shape[0] == y.shape[0]."
        )
    return sizes.pop()


def _sign(direction, caller) -> float:
    if direction not in DIRECTIONS:
        raise ValueError(
            f"{caller}: direction={direction!r}; it must be 'maximize' (e.g. an ELBO) or "
            "'minimize' (e.g. a loss or a KL)."
        )
    return DIRECTIONS[direction]


def _check_objective(objective, caller):
    if not callable(getattr(objective, "estimate", None)):
        what = getattr(objective, "__name__", type(objective).__name__)
        raise TypeError(
            f"{caller}: the objective {what!r} is not an expectation program. Decorate the "
            "function with @pv.expectation; it is called as "
            "objective.estimate(key, params, batch, ...)."
        )


def check_params(params, caller) -> None:
    """Raises unless every leaf of `params` is a floating-point array (what gradients need)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise TypeError(
            f"{caller}: params={params!r} holds no arrays, so there is nothing to fit. Pass the "
            "initial parameters, e.g. {'m': 0.0, 'log_s': 0.0} or jnp.zeros(3)."
        )
    for path, leaf in leaves:
        where = f"params{jax.tree_util.keystr(path)}"
        try:
            dtype = jnp.result_type(leaf)
        except TypeError:
            raise TypeError(
                f"{caller}: {where} is a {type(leaf).__name__}, not an array. Parameters are a "
                "pytree (dict, list, tuple, NamedTuple) of float arrays; keep other settings out "
                "of params (close over them, or pass them as extra arguments)."
            ) from None
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{caller}: {where} has dtype {dtype}, but gradients need floating-point "
                "parameters. Initialize it as a float (0.0, not 0; x.astype(jnp.float32)), or "
                "keep the integer out of params (close over it or pass it as an extra argument)."
            )


def _check_optimizer(optimizer):
    if not all(callable(getattr(optimizer, name, None)) for name in ("init", "update")):
        raise TypeError(
            f"the optimizer {optimizer!r} is not an optax gradient transformation. Pass e.g. "
            "optax.adam(1e-3)."
        )


__all__ = ["TrainState", "TrainStep", "make_step"]
