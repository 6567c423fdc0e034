"""The plug-in estimator of a log-expectation: the log of a K-sample mean."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..adev.log_expectation import LogExpectationEstimator, check_num_samples


@dataclasses.dataclass(frozen=True)
class PlugIn(LogExpectationEstimator):
    r"""``log`` of the mean of K inner estimates; stateless.

    $$
    \widehat{\log Z} = \log \frac{1}{K} \sum_{k=1}^K \hat w_k, \qquad
    \nabla \widehat{\log Z} = \sum_{k=1}^K \frac{\hat w_k}{\sum_j \hat w_j}
    \frac{\nabla \hat w_k}{\hat w_k},
    $$

    a self-normalized gradient: the derivative of its own value when the inner sites are
    reparameterized or enumerated (with REINFORCE inner sites, $\nabla \hat w_k$ is the
    score-function estimate, and the same formula is consistent for $\nabla \log Z$ as K
    grows). By Jensen's inequality
    $\mathbb{E}[\widehat{\log Z}] \le \log Z$; the bias is
    $-\mathrm{Var}[\hat w] / (2 K Z^2) + O(K^{-2})$ (the delta method), so it shrinks as $1/K$,
    and so does the bias of the gradient.
    """

    num_samples: int = 1
    name = "plug_in"

    def __post_init__(self):
        check_num_samples(self.name, self.num_samples)

    def jvp(self, inner, state, tangent):
        log_k = math.log(self.num_samples)
        value = jax.nn.logsumexp(inner.log_w) - log_k
        weights = jax.nn.softmax(inner.log_w)
        return value, jnp.sum(weights * inner.dlog_w), None


def plug_in(num_samples: int = 1) -> PlugIn:
    r"""The plug-in estimator of ``log E[w]``: the log of the mean of `num_samples` estimates.

    Stateless and biased by $O(1/K)$ (see `PlugIn`); with K = 1 its mean is
    $\mathbb{E}[\log \hat w]$, the ELBO-like lower bound. The cheapest choice, and exact when the
    inner program has no randomness left (every site enumerated).

    Args:
      num_samples: K, the number of independent runs of the inner program, a Python int >= 1.

    Returns:
      A `PlugIn` estimator for `pv.log_expectation`.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def log_weight(theta):  # w = 2 theta if b else 1 - theta: E[w] = (1 + theta) / 2
      ...     b = pv.sample("b", dist.Bernoulli(0.5), strategy=pv.enum)
      ...     return jax.numpy.log(jax.numpy.where(b > 0, 2.0 * theta, 1.0 - theta))
      >>> @pv.expectation
      ... def log_z(theta):
      ...     return pv.log_expectation(log_weight, theta, estimator=pv.plug_in())
      >>> print(f"{log_z.estimate(jax.random.key(0), 0.5):.4f}")  # log(0.5 * 1 + 0.5 * 0.5): exact
      -0.2877

    References:
      Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016 (the same
      estimator of a log marginal likelihood).
    """
    return PlugIn(num_samples=num_samples)


__all__ = ["PlugIn", "plug_in"]
