"""Ranking noise-contrastive estimation (InfoNCE): pick each datapoint out among noise points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._noise import (
    check_data,
    check_num_noise,
    check_points,
    draw_noise,
    log_density_of,
    noise_log_prob,
)


def ranking_nce(
    log_unnormalized: Callable[[jax.Array], jax.Array], noise: Any, data: ArrayLike, *,
    num_noise: int = 10, address: str = "noise",
) -> jax.Array:
    r"""The ranking NCE loss on a batch, to minimize inside an expectation program.

    Each datapoint $x_i$ is put among $K$ points $y_{i1}, \dots, y_{iK}$ drawn from a noise
    distribution $q$, and the model is trained as a $(K+1)$-way classifier that picks out the
    datapoint, with logits $G(u) = \log f(u) - \log q(u)$:

    $$
    \ell = -\frac{1}{B} \sum_{i=1}^{B} \Big[ G(x_i) - \log\Big( e^{G(x_i)}
    + \sum_{k=1}^{K} e^{G(y_{ik})} \Big) \Big].
    $$

    A constant added to $\log f$ cancels, so $f$ needs no normalizer (and none can be
    learned). The expected loss is minimized by $f \propto p_d$ for every $K \ge 1$; a larger
    $K$ lowers the variance of the fit. It is the InfoNCE loss of contrastive learning, with
    $q$ as the distribution of the negatives.

    Args:
      log_unnormalized: $\log f$, the model's unnormalized log density, called on a batch of
        points, shape ``(n, *event)``, returning shape ``(n,)``.
      noise: $q$, with a density known at every point: a numpyro distribution over one point
        (its batch dimensions count as event dimensions), or a generative function with one
        random choice, the point (or a call of one, ``proposal(theta)``).
      data: the batch of datapoints, shape ``(B, *event)``.
      num_noise: $K$, the number of noise points per datapoint, a Python int of at least 1
        ($B K$ points are drawn).
      address: the address of the noise draws (``address/...`` for a generative function).

    Returns:
      A scalar: the ranking NCE loss on the batch and the fresh noise; minimize it
      (``direction="minimize"``). It is at least 0, and $\log(K+1)$ where $f \propto q$.

    References:
      Ma & Collins, "Noise Contrastive Estimation and Negative Sampling for Conditional Models:
      Consistency and Statistical Efficiency", EMNLP 2018.
      van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding",
      arXiv:1807.03748, 2018.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> from progvi.unnormalized import ranking_nce
      >>> noise = dist.Normal(0.0, 2.0)
      >>> xs = 1.0 + jax.random.normal(jax.random.key(0), (2000,))
      >>> same = pv.expectation(lambda xs: ranking_nce(noise.log_prob, noise, xs, num_noise=4))
      >>> print(f"{same.estimate(jax.random.key(0), xs):.4f}")  # f = q: the loss is log 5
      1.6094
      >>> @pv.expectation
      ... def loss(mu, xs):  # f(x) = exp(-(x - mu)^2 / 2), no normalizer
      ...     return ranking_nce(lambda x: -0.5 * (x - mu) ** 2, noise, xs, num_noise=4)
      >>> result = pv.fit(
      ...     jax.random.key(1), loss, 0.0, optax.adam(optax.cosine_decay_schedule(0.1, 400)),
      ...     direction="minimize", data=xs, batch_size=500, num_steps=400, progress=False)
      >>> print(f"{result.params:.1f}")
      1.0
    """
    data = check_data("ranking_nce", data)
    count = check_num_noise("ranking_nce", num_noise)
    batch = data.shape[0]
    ys, log_q_noise = draw_noise(address, noise, batch * count)
    check_points("ranking_nce", data, ys)
    name = "log_unnormalized"
    g_data = log_density_of("ranking_nce", name, log_unnormalized, data) - noise_log_prob(
        noise, data
    )
    g_noise = log_density_of("ranking_nce", name, log_unnormalized, ys) - log_q_noise
    # Row i: datapoint i's logit, then those of its own K noise points.
    logits = jnp.concatenate([g_data[:, None], g_noise.reshape(batch, count)], axis=1)
    return -jnp.mean(g_data - jax.nn.logsumexp(logits, axis=1))
