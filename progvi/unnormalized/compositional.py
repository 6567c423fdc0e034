"""The compositional estimator of a log-expectation (MECO): a running inner estimate."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..adev.log_expectation import LogExpectationEstimator, check_num_samples


class CompositionalState(NamedTuple):
    """State of `compositional`."""

    log_u: jax.Array  # log of the running estimate u of E[w] (any value before the first step)
    weight: jax.Array  # 1 - (1 - gamma)**steps: the weight of the average, for its debiasing
    previous: Any  # the inner program's inputs at the last step (variance_reduction only)


@dataclasses.dataclass(frozen=True)
class Compositional(LogExpectationEstimator):
    """See `compositional`."""

    gamma: float = 0.1
    num_samples: int = 1
    variance_reduction: bool = False
    name = "compositional"

    def __post_init__(self):
        if not (isinstance(self.gamma, (int, float)) and not isinstance(self.gamma, bool)
                and 0.0 < self.gamma <= 1.0):
            raise ValueError(
                f"pv.compositional: gamma={self.gamma!r}, but it must be a number in (0, 1]: the "
                "weight of the new estimate in the running average (gamma=1 forgets the past "
                "and is the plug-in estimator), e.g. pv.compositional(gamma=0.05)."
            )
        check_num_samples(self.name, self.num_samples)

    def init(self, inputs):
        zero = jnp.zeros((), jnp.result_type(float))
        previous = [jnp.zeros(x.shape, x.dtype) for x in inputs] if self.variance_reduction else ()
        return CompositionalState(log_u=zero, weight=zero, previous=previous)

    def jvp(self, inner, state, tangent):
        gamma = self.gamma
        weight = (1.0 - gamma) * state.weight + gamma
        rate = gamma / weight  # 1 at the first step: u starts at the first estimate
        log_k = math.log(self.num_samples)
        log_w = jax.nn.logsumexp(inner.log_w) - log_k  # log of this step's estimate of E[w]
        keep = jnp.log1p(-rate) if gamma < 1.0 else -jnp.inf
        if self.variance_reduction:
            log_u = _corrected(state, inner, log_w, rate, log_k)
        else:
            log_u = jnp.logaddexp(keep + state.log_u, jnp.log(rate) + log_w)
        log_u = jax.lax.stop_gradient(log_u)
        # ∇ŵ / u: each run's dŵ_k / K, scaled by 1 / u, computed in log space.
        dvalue = jnp.sum(jnp.exp(inner.log_w - log_k - log_u) * inner.dlog_w)
        previous = list(inner.inputs) if self.variance_reduction else ()
        return log_u, dvalue, CompositionalState(log_u=log_u, weight=weight, previous=previous)


def _corrected(state, inner, log_w, rate, log_k):
    """STORM: ``u ← (1-ρ)(u + ŵ(θ_t) - ŵ(θ_{t-1})) + ρ ŵ(θ_t)``, both ŵ from the same draws."""
    first = state.weight == 0.0
    # Before the first step there are no previous inputs (the state holds zeros, which may be
    # outside the inner program's support): evaluate at the current ones, weighted 0 below.
    previous = [jnp.where(first, x, p) for x, p in zip(inner.inputs, state.previous, strict=True)]
    log_prev = jax.nn.logsumexp(inner.at(previous)) - log_k
    shift = jnp.maximum(jnp.maximum(state.log_u, log_w), log_prev)
    u = jnp.exp(state.log_u - shift)
    w = jnp.exp(log_w - shift)
    w_prev = jnp.exp(log_prev - shift)
    corrected = (1.0 - rate) * (u + w - w_prev) + rate * w
    # The correction can overshoot below zero; the average stays at least its fresh part.
    # The floor in log space: rate * w can underflow in the shifted scale.
    log_corrected = shift + jnp.log(jnp.maximum(corrected, 0.0))
    floor = jnp.log(rate) + log_w
    return jnp.where(first, log_w, jnp.maximum(log_corrected, floor))


def compositional(gamma: float = 0.1, *, num_samples: int = 1,
                  variance_reduction: bool = False) -> Compositional:
    r"""The compositional estimator of ``log E[w]`` (MECO): a running inner estimate $u$.

    At each step the inner program gives an unbiased estimate $\hat w_t$ of $Z_t = \mathbb{E}[w]$
    at the current parameters (the mean of `num_samples` runs), and

    $$
    u_t = (1 - \rho_t)\, u_{t-1} + \rho_t\, \hat w_t, \qquad
    \text{value } \log u_t, \qquad \text{gradient } \frac{\nabla \hat w_t}{u_t},
    $$

    with $\rho_t = \gamma / (1 - (1-\gamma)^t)$: the exponential moving average of rate
    $\gamma$, debiased as Adam's moments are, so that $u_1 = \hat w_1$ and $\rho_t \to \gamma$.
    $u$ is kept in log space, so it cannot overflow. Where the plug-in estimator's gradient
    $\nabla \hat w / \hat w$ divides by a noisy estimate, this one divides by an average over
    past steps, whose variance shrinks with $\gamma$ while its lag behind the moving $Z_t$ grows
    with the step size over $\gamma$.

    With ``variance_reduction=True`` the average gets the STORM correction (the MSVR estimator of
    Jiang et al. 2022): $u_t = (1-\rho_t)(u_{t-1} + \hat w_t(\theta_t) - \hat w_t(\theta_{t-1})) +
    \rho_t \hat w_t(\theta_t)$, both terms from the same draws, which tracks $Z_t$ without the
    lag. It evaluates the inner program a second time (without tangents) at the previous
    inputs, kept in the state; the corrected $u_t$ is kept at least $\rho_t \hat w_t$.

    The paper's moving average of the gradient is an optimizer's momentum:
    ``optax.sgd(lr, momentum=beta)`` (or Adam) with this estimator is MECO with momentum.

    Convergence (Jiang et al. 2023, after the analyses of SCGD and NASA by Wang, Fang & Liu 2017
    and Ghadimi, Ruszczyński & Wang 2020): for a smooth non-convex objective, with
    $\gamma$ and the step size of the order of $\epsilon^2$ (the step size a constant multiple of
    $\gamma$), moving-average momentum and $T = O(\epsilon^{-4})$ steps, the iterates reach an
    $\epsilon$-stationary point in expectation; the variance-reduced form improves this to
    $O(\epsilon^{-3})$. It holds when $\log$ is Lipschitz and smooth on the range of $u$ (the
    inner value $Z_\theta$ bounded away from 0), $\hat w$ and $\nabla \hat w$ have bounded
    variance under the noise (the rate depends on that variance: a noise far from the model
    slows it), and $Z_\theta$ is smooth in $\theta$ (mean-squared smooth for STORM). Unlike NCE,
    it needs no ratio of data to noise and no learned $\log Z$.

    Args:
      gamma: $\gamma \in (0, 1]$, the weight of the new estimate; 1 is the plug-in estimator.
      num_samples: the runs of the inner program per step, a Python int >= 1.
      variance_reduction: whether to add the STORM correction.

    Returns:
      A `Compositional` estimator for `pv.log_expectation`; its state is a
      `CompositionalState`, created and threaded by `pv.fit` and `pv.make_step`.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> noise = dist.Normal(0.0, 3.0)
      >>> @pv.expectation
      ... def log_weight(p):  # f(y) = exp(-(y - mu)^2 / 2): Z = sqrt(2 pi)
      ...     y = pv.sample("y", noise)
      ...     return -0.5 * (y - p["mu"]) ** 2 - noise.log_prob(y)
      >>> @pv.expectation
      ... def nll(p, x):
      ...     log_z = pv.log_expectation(log_weight, p, estimator=pv.compositional(0.05))
      ...     return jnp.mean(0.5 * (x - p["mu"]) ** 2) + log_z
      >>> xs = 1.5 + jax.random.normal(jax.random.key(1), (2000,))
      >>> adam = optax.adam(optax.cosine_decay_schedule(0.05, 1500))
      >>> result = pv.fit(jax.random.key(0), nll, {"mu": 0.0}, adam, direction="minimize",
      ...                 data=xs, batch_size=200, num_steps=1500, progress=False)
      >>> print(f"{result.params['mu']:.1f} {xs.mean():.1f}")  # the maximum-likelihood mean
      1.5 1.5

    References:
      Jiang, Qin, Wu, Chen, Yang & Zhang, "Learning Unnormalized Statistical Models via
      Compositional Optimization", ICML 2023.
      Wang, Fang & Liu, "Stochastic compositional gradient descent", Math. Programming 2017.
      Jiang, Wang, Wang, Zhang & Yang, "Multi-block-single-probe variance reduced estimator for
      coupled compositional optimization", NeurIPS 2022.
    """
    return Compositional(gamma=gamma, num_samples=num_samples,
                         variance_reduction=variance_reduction)


__all__ = ["Compositional", "CompositionalState", "compositional"]
