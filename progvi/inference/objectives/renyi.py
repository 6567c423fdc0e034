"""The variational Renyi bound."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import jax

from ...adev.particles import particles
from ...gen import GenerativeFunction
from ._weights import log_weight
from .errors import ObjectiveError, check_call, check_count, explained


def renyi(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    alpha: float, *, model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""K-draw estimate of the variational Renyi bound of order alpha.

    $$
        \mathcal{L}_\alpha = \frac{1}{1 - \alpha} \log \mathbb{E}_{z \sim q}\Big[
        \Big(\frac{p(x, z)}{q(z)}\Big)^{1 - \alpha}\Big],
        \qquad
        \hat{\mathcal{L}}_{\alpha, K} = \frac{1}{1 - \alpha}
        \log \frac{1}{K} \sum_{k=1}^K w_k^{1 - \alpha},\ z_k \sim q.
    $$

    $\mathcal{L}_\alpha$ decreases in alpha, equals ``log p(x)`` at alpha = 0 and tends
    to the ELBO as alpha tends to 1; at alpha = 0 the estimator is `pv.iwae`'s. For alpha < 1
    the estimator's expectation does not decrease with K and tends to
    $\mathcal{L}_\alpha$ (a lower bound of ``log p(x)`` for alpha >= 0, an upper bound for
    alpha < 0); for alpha > 1 it does not increase with K, from the ELBO at K = 1. Gradients
    come from the particles' strategies, as in `pv.iwae`.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices.
      obs: the observed choices, merged into each particle's choices for the model.
      num_particles: K, a Python int of at least 1.
      alpha: the order, a finite Python number other than 1 (at 1 the bound is `pv.elbo`).
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple.

    Returns:
      A scalar: one draw of $\hat{\mathcal{L}}_{\alpha, K}$, whose gradient is unbiased for
      the gradient of its expectation.

    References:
      Li & Turner, "Renyi Divergence Variational Inference", NeurIPS 2016.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     z = pv.sample("z", dist.Normal(0.0, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> def bound(alpha):
      ...     program = pv.expectation(
      ...         lambda m: pv.renyi(model, guide, {"x": 2.0}, 10, alpha, guide_args=(m,)))
      ...     keys = jax.random.split(jax.random.key(0), 4000)
      ...     return jax.vmap(lambda key: program.estimate(key, 0.0))(keys).mean()
      >>> print(f"{bound(0.0):.2f} {bound(0.5):.2f} {bound(0.99):.2f}")  # down to the ELBO
      -2.33 -2.70 -3.39
    """
    check_call("renyi", obs, model_args=model_args, guide_args=guide_args)
    with explained("renyi", model, guide, obs, model_args, guide_args):
        count = check_count("renyi", num_particles)
        if not isinstance(alpha, numbers.Real) or alpha == 1 or not math.isfinite(alpha):
            raise ObjectiveError(
                f"pv.renyi: alpha={alpha!r}, but it must be a finite Python number other than 1: "
                "the bound divides by 1 - alpha. Its limit at alpha = 1 is the ELBO: use "
                "pv.elbo(model, guide, obs, ...) there."
            )
        log_w, _ = particles(log_weight, count, model, guide, obs, model_args, guide_args)
        return (jax.nn.logsumexp((1.0 - alpha) * log_w) - math.log(count)) / (1.0 - alpha)


__all__ = ["renyi"]
