"""An unbiased estimate of an upper bound on a log-expectation, with a learned offset b."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ..adev.log_expectation import LogExpectationEstimator, check_num_samples


@dataclasses.dataclass(frozen=True)
class TangentBound(LogExpectationEstimator):
    """See `tangent_bound`."""

    b: Any = 0.0
    num_samples: int = 1
    name = "tangent_bound"
    dynamic_fields = ("b",)

    def __post_init__(self):
        check_num_samples(self.name, self.num_samples)
        if jnp.ndim(self.b) != 0:
            raise ValueError(
                f"pv.tangent_bound: b has shape {jnp.shape(self.b)}, but it must be a scalar, "
                'the learned offset: pass e.g. pv.tangent_bound(params["b"]).'
            )

    def jvp(self, inner, state, tangent):
        log_k = math.log(self.num_samples)
        # ŵ e^{-b}, from the K runs in log space.
        scaled = jnp.exp(jax.nn.logsumexp(inner.log_w) - log_k - self.b)
        dscaled = jnp.sum(jnp.exp(inner.log_w - log_k - self.b) * inner.dlog_w)
        value = scaled + self.b - 1.0
        return value, dscaled + (1.0 - scaled) * tangent.b, None


def tangent_bound(b: ArrayLike, *, num_samples: int = 1) -> TangentBound:
    r"""An unbiased estimate of the tangent-line upper bound on ``log E[w]``, at a learned $b$.

    $\log$ is concave, so it lies below each of its tangents: for every real $b$,

    $$
    \log Z \le Z e^{-b} + b - 1, \quad \text{with equality at } b = \log Z,
    $$

    and the right side is linear in $Z$: $\hat w e^{-b} + b - 1$ is an unbiased estimate of the
    bound, and its gradient (in the model's parameters and in $b$) an unbiased estimate of the
    bound's. No state: $b$ is an ordinary parameter, trained by the same optimizer; minimizing the
    bound over $b$ makes it tight, since the bound's derivative in $b$ is $1 - Z e^{-b}$. Use it
    where the objective is minimized in the log-expectation (a negative log-likelihood's
    $+\log Z$), so that the optimizer tightens the bound rather than loosening it.

    Args:
      b: the offset, a scalar that is usually a learned parameter (``params["b"]``); the
        bound is tight at ``b = log Z``.
      num_samples: the runs of the inner program per estimate, a Python int >= 1.

    Returns:
      A `TangentBound` estimator for `pv.log_expectation`.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def log_weight():  # w = exp(y), y ~ N(0.875, 0.5): log E[w] = 0.875 + 0.5**2 / 2 = 1
      ...     return pv.sample("y", dist.Normal(0.875, 0.5))
      >>> @pv.expectation
      ... def bound(b):
      ...     return pv.log_expectation(log_weight, estimator=pv.tangent_bound(b))
      >>> keys = jax.random.split(jax.random.key(0), 100000)
      >>> values = jax.vmap(lambda k: bound.estimate(k, 1.0))(keys)
      >>> print(f"{values.mean():.1f}")  # tight at b = log Z = 1
      1.0
      >>> print(f"{jax.vmap(lambda k: bound.estimate(k, 0.0))(keys).mean():.1f}")  # e - 1 > 1
      1.7

    References:
      Jiang, Qin, Wu, Chen, Yang & Zhang, "Learning Unnormalized Statistical Models via
      Compositional Optimization", ICML 2023 (the bound as a baseline).
    """
    return TangentBound(b=b, num_samples=num_samples)


__all__ = ["TangentBound", "tangent_bound"]
