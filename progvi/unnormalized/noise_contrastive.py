"""Noise-contrastive estimation: logistic regression of data against noise."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._noise import (
    check_data,
    check_points,
    check_ratio,
    draw_noise,
    log_density_of,
    noise_log_prob,
)


def nce(
    log_model: Callable[[jax.Array], jax.Array], noise: Any, data: ArrayLike, *,
    noise_ratio: float = 1.0, address: str = "noise",
) -> jax.Array:
    r"""The noise-contrastive estimation loss on a batch, to minimize inside an expectation program.

    NCE fits a model without computing its normalizer: it trains the model's log density,
    normalizer included as a learned parameter, as the logit of a classifier that tells the
    $B$ datapoints $x_i$ from $T = \mathrm{round}(\nu B)$ points $y_j$ drawn from a noise
    distribution $q$. With $\nu = T / B$ and

    $$
    G(u) = \log p_m(u) - \log \nu - \log q(u),
    $$

    the loss is

    $$
    \ell = -\Big(\frac{1}{B} \sum_{i=1}^{B} \log \sigma\big(G(x_i)\big)
    + \nu \, \frac{1}{T} \sum_{j=1}^{T} \log\big(1 - \sigma(G(y_j))\big)\Big).
    $$

    Its expectation over the data and the noise is minimized by $p_m = p_d$, the data density
    (for a noise that is positive wherever $p_d$ is), and at that minimum the model is
    normalized: the learned normalizer is the true one. A noise close to the data gives a lower
    variance; $\nu > 1$ lowers it further. ``log sigma`` is computed stably
    (`jax.nn.log_sigmoid`, with $\log(1 - \sigma(g)) = \log\sigma(-g)$).

    The noise points go through the program's strategies like any draw; for a fixed noise they
    carry no gradient. Every call draws fresh noise.

    Args:
      log_model: the model's log density $\log p_m$, *normalized by a learned parameter*
        (``lambda x: log_f(x) - log_z`` with ``log_z`` fitted along with the model). It is
        called on a batch of points, shape ``(n, *event)``, and returns shape ``(n,)``.
      noise: $q$, with a density known at every point: a numpyro distribution over one point
        (its batch dimensions count as event dimensions), or a generative function with one
        random choice, the point (or a call of one, ``proposal(theta)``).
      data: the batch of datapoints, shape ``(B, *event)``.
      noise_ratio: $\nu$, the number of noise points per datapoint, a positive Python number;
        ``round(noise_ratio * B)`` must be at least 1.
      address: the address of the noise draws (``address/...`` for a generative function).

    Returns:
      A scalar: the NCE loss on the batch and the fresh noise, an unbiased estimate of the
      population loss; minimize it (``direction="minimize"``).

    References:
      Gutmann & Hyvärinen, "Noise-contrastive estimation: A new estimation principle for
      unnormalized statistical models", AISTATS 2010.
      Gutmann & Hyvärinen, "Noise-Contrastive Estimation of Unnormalized Statistical Models,
      with Applications to Natural Image Statistics", JMLR 13, 2012.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> from progvi.unnormalized import nce
      >>> noise = dist.Normal(0.0, 2.0)
      >>> @pv.expectation
      ... def loss(params, xs):  # f(x) = exp(-(x - mu)^2 / 2): Z = sqrt(2 pi)
      ...     log_f = lambda x: -0.5 * (x - params["mu"]) ** 2
      ...     return nce(lambda x: log_f(x) - params["log_z"], noise, xs)
      >>> xs = 1.0 + jax.random.normal(jax.random.key(0), (2000,))
      >>> same = pv.expectation(lambda xs: nce(noise.log_prob, noise, xs))
      >>> print(f"{same.estimate(jax.random.key(0), xs):.4f}")  # p_m = q: G = 0, loss 2 log 2
      1.3863
      >>> result = pv.fit(
      ...     jax.random.key(1), loss, {"mu": 0.0, "log_z": 0.0},
      ...     optax.adam(optax.cosine_decay_schedule(0.1, 400)),
      ...     direction="minimize", data=xs, batch_size=500, num_steps=400, progress=False)
      >>> mu, z = result.params["mu"], jnp.exp(result.params["log_z"])
      >>> print(f"{mu:.1f} {bool(abs(z - jnp.sqrt(2 * jnp.pi)) < 0.1)}")  # Z = sqrt(2 pi)
      1.0 True
    """
    data = check_data("nce", data)
    batch = data.shape[0]
    count = check_ratio("nce", noise_ratio, batch)
    ys, log_q_noise = draw_noise(address, noise, count)
    check_points("nce", data, ys)
    nu = count / batch  # the realized ratio T / B, noise_ratio up to rounding
    log_q_data = noise_log_prob(noise, data)
    g_data = log_density_of("nce", "log_model", log_model, data) - math.log(nu) - log_q_data
    g_noise = log_density_of("nce", "log_model", log_model, ys) - math.log(nu) - log_q_noise
    return -(jnp.mean(jax.nn.log_sigmoid(g_data)) + nu * jnp.mean(jax.nn.log_sigmoid(-g_noise)))
