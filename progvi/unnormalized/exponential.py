"""eNCE: noise-contrastive estimation with the exponential loss."""

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


def ence(
    log_model: Callable[[jax.Array], jax.Array], noise: Any, data: ArrayLike, *,
    num_noise: int | None = None, address: str = "noise",
) -> jax.Array:
    r"""The eNCE loss on a batch, to minimize inside an expectation program.

    eNCE replaces the logistic loss of NCE by the exponential loss of the log ratio
    $r(u) = \log p_m(u) - \log q(u)$ between the model and a noise distribution $q$: on $B$
    datapoints $x_i$ and $T$ noise points $y_j \sim q$,

    $$
    \ell = \frac{1}{B} \sum_{i=1}^{B} e^{-r(x_i)/2} + \frac{1}{T} \sum_{j=1}^{T} e^{r(y_j)/2},
    $$

    an unbiased estimate of $\mathbb{E}_{p_d}[\sqrt{q/p_m}] + \mathbb{E}_q[\sqrt{p_m/q}]$.
    That expectation is minimized pointwise by $p_m = p_d$, where it equals
    $2\int\sqrt{p_d\,q}$ (twice the Bhattacharyya coefficient); as in NCE the model's
    normalizer is a learned parameter and comes out right at the minimum. For an exponential
    family with the log normalizer among its parameters, $r$ is linear in them and the loss
    is convex; Liu et al. (2022) show that NCE's landscape is flat when $q$ is far from $p_d$
    and that normalized gradient descent on eNCE provably avoids that.

    Args:
      log_model: the model's log density $\log p_m$, *normalized by a learned parameter*
        (``lambda x: log_f(x) - log_z`` with ``log_z`` fitted along with the model). It is
        called on a batch of points, shape ``(n, *event)``, and returns shape ``(n,)``.
      noise: $q$, with a density known at every point: a numpyro distribution over one point
        (its batch dimensions count as event dimensions), or a generative function with one
        random choice, the point (or a call of one, ``proposal(theta)``).
      data: the batch of datapoints, shape ``(B, *event)``.
      num_noise: $T$, the number of noise points, a Python int of at least 1; default $B$.
      address: the address of the noise draws (``address/...`` for a generative function).

    Returns:
      A scalar: the eNCE loss on the batch and the fresh noise; minimize it
      (``direction="minimize"``).

    References:
      Liu, Rosenfeld, Ravikumar & Risteski, "Analyzing and Improving the Optimization
      Landscape of Noise-Contrastive Estimation", ICLR 2022 (arXiv:2110.11271).

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> from progvi.unnormalized import ence
      >>> noise = dist.Normal(0.0, 2.0)
      >>> xs = 1.0 + jax.random.normal(jax.random.key(0), (2000,))
      >>> same = pv.expectation(lambda xs: ence(noise.log_prob, noise, xs))
      >>> print(f"{same.estimate(jax.random.key(0), xs):.4f}")  # p_m = q: every term is 1
      2.0000
      >>> @pv.expectation
      ... def loss(params, xs):  # f(x) = exp(-(x - mu)^2 / 2): Z = sqrt(2 pi)
      ...     log_f = lambda x: -0.5 * (x - params["mu"]) ** 2
      ...     return ence(lambda x: log_f(x) - params["log_z"], noise, xs)
      >>> result = pv.fit(
      ...     jax.random.key(1), loss, {"mu": 0.0, "log_z": 0.0},
      ...     optax.adam(optax.cosine_decay_schedule(0.1, 400)),
      ...     direction="minimize", data=xs, batch_size=500, num_steps=400, progress=False)
      >>> mu, z = result.params["mu"], jnp.exp(result.params["log_z"])
      >>> print(f"{mu:.1f} {bool(abs(z - jnp.sqrt(2 * jnp.pi)) < 0.1)}")  # Z = sqrt(2 pi)
      1.0 True
    """
    data = check_data("ence", data)
    count = data.shape[0] if num_noise is None else check_num_noise("ence", num_noise)
    ys, log_q_noise = draw_noise(address, noise, count)
    check_points("ence", data, ys)
    r_data = log_density_of("ence", "log_model", log_model, data) - noise_log_prob(noise, data)
    r_noise = log_density_of("ence", "log_model", log_model, ys) - log_q_noise
    return jnp.mean(jnp.exp(-0.5 * r_data)) + jnp.mean(jnp.exp(0.5 * r_noise))
