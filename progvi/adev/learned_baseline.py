r"""Learned REINFORCE baselines: a value computed from params, trained by its squared error.

A REINFORCE site multiplies its score by ``(R - b)``, where ``R`` is the value of the term the
score belongs to (the program's value, or one datapoint's term inside `pv.plate`). Any ``b``
that does not depend on the site's draw keeps the estimate unbiased; the one that removes most
variance is close to ``E[R]``. A *learned* baseline is such a ``b`` computed in the program by
a function of parameters (a small network of features), trained to minimize

$$ \ell(\psi) = \big(\bot(R) - b_\psi\big)^2 , \qquad
   \nabla_\psi \ell = -2\,\big(\bot(R) - b_\psi\big)\,\nabla_\psi b_\psi , $$

where $\bot$ stops the gradient. ``b`` enters the REINFORCE term stopped, so the objective's
gradient is unchanged and stays unbiased; its squared error leaves the program through a
channel of its own, the *auxiliary loss* (`Evaluation.aux_loss`), which `make_step` and `fit`
add to the loss they minimize whatever the objective's direction. That is why a learned
baseline is not a zero-valued term added to the objective: when the objective is maximized,
the optimizer would climb the squared error instead of descending it.

How the interpreter handles it: a site whose strategy holds a `LearnedBaseline` is given its
stopped value as an ordinary baseline, and the dual number ``(b, db)`` is registered with the
`Sink` of the current term; the owner of the sink (the whole program, or one datapoint of
`pv.plate`) turns the registered values into the loss above once the term's value ``R`` is
known. The loss is summed over sites, over the draws of a batched site (each particle of
`pv.particles` has its own ``b``) and over the datapoints of a plate.

References:
  Mnih & Gregor, "Neural variational inference and learning in belief networks", ICML 2014.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .errors import ProgramError, StrategyError
from .keys import shown


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class LearnedBaseline:
    """A baseline whose parameters are trained by its squared error; see `learned_baseline`."""

    value: Any  # the baseline, a float scalar computed in the program (one per draw of the site)

    def tree_flatten(self):
        return (self.value,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def learned_baseline(value: Any) -> LearnedBaseline:
    r"""Marks `value` as a learned REINFORCE baseline, trained by its squared error.

    Use it as ``pv.reinforce(baseline=pv.learned_baseline(b))``.

    `value` is a float scalar computed in the program from parameters, e.g. a small network of
    features of the datapoint. The site uses it as its baseline with its gradient stopped, so
    the objective's gradient estimate stays unbiased, and the parameters that `value` depends
    on are trained to minimize the squared error ``(R - b)^2`` against the term ``R`` the
    site's score multiplies (the program's value, or the datapoint's term inside `pv.plate`).
    The squared errors are the program's auxiliary loss, returned by ``evaluate`` as
    ``Evaluation.aux_loss``; `fit` and `make_step` minimize it alongside the objective in either
    direction, so the baseline's parameters receive only its gradient.

    ``grad`` and ``value_and_grad`` of the program are the objective's gradient alone: for the
    baseline's parameters it is zero. To train a baseline by hand, differentiate ``aux_loss``.

    Compute `value` from ``jax.lax.stop_gradient`` of any features that depend on other
    parameters (an encoder's output): otherwise the squared error trains those too.

    Args:
      value: the baseline, a float scalar (inside `pv.particles`, one per particle).

    Returns:
      A `LearnedBaseline` to pass as ``pv.reinforce(baseline=...)``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def loss(params):
      ...     b = params["b"]  # a learned constant; any function of params works
      ...     z = pv.sample("z", dist.Bernoulli(logits=params["logit"]),
      ...                   strategy=pv.reinforce(baseline=pv.learned_baseline(b)))
      ...     return (z - 0.3) ** 2
      >>> params = {"logit": 0.0, "b": 0.0}
      >>> out = loss.evaluate(jax.random.key(0), None, params)
      >>> bool(jnp.isclose(out.aux_loss, (out.value - 0.0) ** 2))
      True
      >>> g = jax.grad(lambda p: loss.evaluate(jax.random.key(0), None, p).aux_loss)(params)
      >>> print(f"{g['b']:.2f} {g['logit']:.2f}")  # -2 (R - b); nothing for the objective's params
      -0.98 0.00

    References:
      Mnih & Gregor, "Neural variational inference and learning in belief networks", ICML 2014.
    """
    if isinstance(value, LearnedBaseline):
        raise StrategyError(
            "pv.learned_baseline was given a learned baseline; pass the value itself: "
            "pv.learned_baseline(b)."
        )
    try:
        dtype = jnp.asarray(value).dtype
    except (TypeError, ValueError):
        raise StrategyError(
            f"pv.learned_baseline(value): value is {shown(value)}, not an array. Pass the "
            "baseline computed in the program, e.g. pv.learned_baseline(net(params['baseline'], "
            "features))."
        ) from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise StrategyError(
            f"pv.learned_baseline(value): value has dtype {dtype}; a baseline is trained by "
            "gradients, so it must be a float (e.g. jnp.asarray(b, jnp.float32))."
        )
    return LearnedBaseline(value)


def learned_field(strategy) -> str | None:
    """The name of the field of `strategy` that holds a `LearnedBaseline`, if any."""
    if not dataclasses.is_dataclass(strategy):
        return None
    names = [f.name for f in dataclasses.fields(strategy)
             if isinstance(getattr(strategy, f.name), LearnedBaseline)]
    if len(names) > 1:
        raise StrategyError(
            f"pv.{strategy.name} holds learned baselines in several fields ({names}); a "
            "strategy may hold at most one."
        )
    return names[0] if names else None


def check_site(address: str, strategy, state) -> None:
    """Raises where a learned baseline at `address` could not be trained; called at trace time."""
    if not strategy.is_local:
        raise StrategyError(
            f"sample site {address!r}: pv.{strategy.name} holds a learned baseline, but only "
            "local strategies (those returning a score term, such as pv.reinforce) use one."
        )
    where = state.barrier or (None if state.sink is not None else "in a run that keeps no state")
    if where is not None:
        raise ProgramError(
            f"the learned baseline of sample site {address!r} is {where}, where the value of "
            "the term its score multiplies is not known once, so its squared error cannot be "
            "formed. Move the site out (before that site, outside the loop, branch or inner "
            "program: a Python loop instead of lax.scan), or use a constant or "
            "pv.train.moving_average_baseline there."
        )


def check_value(address: str, value) -> None:
    """Raises unless the learned baseline of one draw of the site is a scalar."""
    if jnp.shape(value) != ():
        raise StrategyError(
            f"sample site {address!r}: the learned baseline has shape {jnp.shape(value)}, but "
            "it must be a scalar for each draw of the site (the site's score is summed over its "
            "elements). Return one value per datapoint, e.g. jnp.sum or a network with one "
            "output, or give each element its own site."
        )


def squared_error(value, registered) -> tuple[Any, Any]:
    """The dual number of ``Σ (R - b)^2`` over the registered ``(b, db)``, ``R`` = `value`."""
    total = jnp.zeros((), jnp.result_type(float))
    tangent = jnp.zeros((), jnp.result_type(float))
    value = jax.lax.stop_gradient(value)
    for b, db in registered:
        error = value - b
        total = total + jnp.sum(error ** 2)
        tangent = tangent - 2.0 * jnp.sum(error * db)
    return total, tangent


__all__ = ["LearnedBaseline", "learned_baseline"]
