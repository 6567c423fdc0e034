"""REINFORCE (the score-function estimator), with an optional baseline.

``d/dθ E[f(x)] = E[f'(x) + (f(x) - b) · d/dθ log p(x; θ)]`` for any ``b`` that does not depend on
``x``. Here ``f`` is the rest of the whole program, so the score term multiplies the program's
final value; the rule is local and works inside loops.

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", Machine Learning 1992.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .strategy import Local, Strategy


@dataclasses.dataclass(frozen=True)
class Reinforce(Strategy):
    """Score-function gradient; ``baseline`` may be a constant or a value computed earlier.

    It may also be a `pv.train.Estimator` (a moving average, kept as estimator state) or a
    `pv.learned_baseline` (a value computed from params, trained by its squared error).
    """

    baseline: Any = 0.0
    name = "reinforce"
    dynamic_fields = ("baseline",)

    def local(self, key, dist, tangent):
        value = jax.lax.stop_gradient(dist.sample(key))
        _, score = jax.jvp(lambda d: jnp.sum(d.log_prob(value)), (dist,), (tangent,))
        return Local(value, None, score, jax.lax.stop_gradient(self.baseline))


reinforce = Reinforce()
"""The score-function strategy, the default for distributions without ``has_rsample``; call it
for a baseline: ``pv.reinforce(baseline=b)``."""
