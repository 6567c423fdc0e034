"""Estimator state: what a stateful gradient estimator carries from one training step to the next.

Some estimators need more than the current draws: a REINFORCE baseline is best set to the
objective's recent average, and the compositional estimator of an unnormalized model keeps a
running inner estimate. Their state is pure data keyed by the address of the construct that owns
it, found in the program and threaded by `fit` and `make_step` (see `progvi.adev.state`). A
baseline's state has the shape of an optax transformation: an `Estimator` is three pure
functions,

* ``init() -> state``,
* ``read(state) -> value``: the baseline a site uses at a step,
* ``update(value, state) -> state``: the next state, from the value of the term it multiplies.

A step reads the state *before* it draws and updates it *after*, so the baseline never depends
on that step's random choices, which keeps the REINFORCE estimate unbiased. A baseline computed
by a network of parameters is not state but a learned quantity: `learned_baseline` (defined in
`progvi.adev.learned_baseline`, re-exported here) trains it by its squared error.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from ..adev.learned_baseline import learned_baseline
from ..adev.state import Estimator


class MovingAverageState(NamedTuple):
    """State of `moving_average_baseline`."""

    average: Any  # the weighted mean of the values seen so far (0 before the first)
    weight: Any  # 1 - decay**count: the total weight of those values, for the debiasing


def moving_average_baseline(decay: float = 0.9) -> Estimator:
    r"""A REINFORCE baseline: the exponentially decaying average of past objective values.

    Pass it as the baseline of a site, ``pv.reinforce(baseline=moving_average_baseline(0.9))``:
    `fit` and `make_step` keep its state at the site's address and update it from the value of
    the term the site's score multiplies. Subtracting a constant that does not depend on the
    draw leaves REINFORCE unbiased and, when it is close to the objective's value, removes most
    of its variance. The average is debiased as Adam's moments are, so the first steps are not
    pulled towards zero; before any update the baseline is 0.

    $$
        w_t = \beta w_{t-1} + (1 - \beta), \qquad
        b_t = b_{t-1} + \frac{1 - \beta}{w_t} (v_t - b_{t-1})
    $$

    Args:
      decay: the weight $\beta$ of the past, in [0, 1): 0.9 averages about the last 10
        steps.

    Returns:
      An `Estimator` whose state is a `MovingAverageState` and whose `read` gives the baseline.

    Examples:
      >>> import progvi as pv
      >>> baseline = pv.train.moving_average_baseline(decay=0.5)
      >>> state = baseline.init()
      >>> for value in [4.0, 2.0]:
      ...     state = baseline.update(value, state)
      >>> print(f"{baseline.read(state):.3f}")  # (0.5 * 4 + 2) / 1.5
      2.667

    References:
      Williams, "Simple statistical gradient-following algorithms for connectionist
      reinforcement learning", Machine Learning 1992.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(
            f"moving_average_baseline(decay={decay!r}): decay must be in [0, 1); it is the weight "
            "of the past average, e.g. decay=0.9 averages about the last 10 steps."
        )

    def init():
        zero = jnp.zeros((), jnp.result_type(float))
        return MovingAverageState(average=zero, weight=zero)

    def read(state):
        return state.average

    def update(value, state):
        weight = decay * state.weight + (1.0 - decay)
        rate = (1.0 - decay) / weight
        return MovingAverageState(average=state.average + rate * (value - state.average),
                                  weight=weight)

    return Estimator(init=init, read=read, update=update)


__all__ = ["Estimator", "MovingAverageState", "learned_baseline", "moving_average_baseline"]
