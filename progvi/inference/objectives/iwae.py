"""The importance weighted bound, and its doubly reparameterized gradient."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ...adev.particles import particles
from ...gen import GenerativeFunction, density, merge, simulate
from ._weights import frozen, log_weight
from .errors import check_call, check_count, explained


def iwae(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    *, model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""K-draw estimate of the importance weighted bound, to call inside an expectation program.

    $$
        \mathcal{L}_K = \mathbb{E}_{z_{1:K} \sim q}\Big[\log \frac{1}{K} \sum_{k=1}^K
        \frac{p(x, z_k)}{q(z_k)}\Big], \qquad
        \mathcal{L}_1 = \mathrm{ELBO} \le \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x).
    $$

    The estimator is the bracket at K independent draws (`pv.particles`), each through its
    choices' strategies: reparameterization gives the IWAE gradient
    $\sum_k \tilde w_k \nabla \log w_k$ with normalized weights $\tilde w_k$;
    REINFORCE on discrete choices gives the score-function gradient (see `pv.vimco` for one
    with lower variance). With a marginal family as the guide (`pv.marginal`) each ``q(z_k)``
    is the family's unbiased estimate for its draw, and this is doubly importance weighted
    hierarchical VI (DIWHVI, Sobolev & Vetrov 2019).

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices.
      obs: the observed choices, merged into each particle's choices for the model.
      num_particles: K, a Python int of at least 1 (K = 1 is the ELBO).
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple.

    Returns:
      A scalar: one unbiased estimate of $\mathcal{L}_K$.

    References:
      Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
      Sobolev & Vetrov, "Importance Weighted Hierarchical Variational Inference", NeurIPS 2019.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     z = pv.sample("z", dist.Normal(0.0, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> def bound(k):
      ...     program = pv.expectation(
      ...         lambda m: pv.iwae(model, guide, {"x": 2.0}, k, guide_args=(m,)))
      ...     keys = jax.random.split(jax.random.key(0), 4000)
      ...     return jax.vmap(lambda key: program.estimate(key, 0.0))(keys).mean()
      >>> log_px = dist.Normal(0.0, jnp.sqrt(2.0)).log_prob(2.0)
      >>> print(f"{bound(1):.2f} {bound(10):.2f} {log_px:.2f}")  # tighter with K
      -3.41 -2.33 -2.27
    """
    check_call("iwae", obs, model_args=model_args, guide_args=guide_args)
    with explained("iwae", model, guide, obs, model_args, guide_args):
        count = check_count("iwae", num_particles)
        log_w, _ = particles(log_weight, count, model, guide, obs, model_args, guide_args)
        return jax.nn.logsumexp(log_w) - math.log(count)


def iwae_dreg(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    *, model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""The importance weighted bound with the doubly reparameterized gradient for the guide.

    The value is the `pv.iwae` estimate. The gradient is the IWAE gradient for the model's
    parameters, $\sum_k \tilde w_k \nabla_\theta \log p(x, z_k)$, and for the guide's

    $$
        \sum_{k=1}^K \tilde w_k^2 \, \frac{\partial \log w_k}{\partial z_k}
        \frac{\partial z_k}{\partial \phi},
        \qquad \tilde w_k = \frac{w_k}{\sum_j w_j},
    $$

    which has the expectation of the IWAE gradient and, unlike it, a signal-to-noise ratio that
    does not decay as K grows. It is built from zero-valued terms: ``log q`` is evaluated with
    the guide's parameters frozen (only the path through z remains, with coefficient
    $\tilde w_k$), and $\sum_k (\tilde w_k^2 - \tilde w_k)(\ell_k - \bar\ell_k)$
    is added, where $\ell_k$ is the log weight with every parameter frozen (so it reaches
    the guide only through z) and $\bar\ell_k$ its value.

    Use it with reparameterized guides whose density is exact.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices, reparameterized.
      obs: the observed choices, merged into each particle's choices for the model.
      num_particles: K, a Python int of at least 1 (K = 1 is `pv.elbo_stl`).
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple.

    Returns:
      A scalar: one unbiased estimate of the IWAE bound.

    References:
      Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators for Monte
      Carlo Objectives", ICLR 2019.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     z = pv.sample("z", dist.Normal(0.0, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> def gradients(objective):
      ...     program = pv.expectation(
      ...         lambda m: objective(model, guide, {"x": 2.0}, 20, guide_args=(m,)))
      ...     keys = jax.random.split(jax.random.key(0), 2000)
      ...     return jax.vmap(lambda key: program.grad(key, -0.5))(keys)
      >>> iwae, dreg = gradients(pv.iwae), gradients(pv.iwae_dreg)
      >>> print(f"{iwae.mean():.1f} {dreg.mean():.1f}")  # the same expectation
      0.3 0.3
      >>> bool(dreg.std() < iwae.std() / 3)
      True
    """
    check_call("iwae_dreg", obs, model_args=model_args, guide_args=guide_args)
    with explained("iwae_dreg", model, guide, obs, model_args, guide_args):
        count = check_count("iwae_dreg", num_particles)

        def particle():
            tr = simulate(guide, *guide_args)
            choices = merge(tr.choices, obs)
            # Frozen guide parameters: log q reaches phi only through the draw (no score term).
            log_q, _ = density(guide, tr.choices, *frozen(guide_args))
            log_p, _ = density(model, choices, *model_args)
            # Every parameter frozen: the log weight as a function of z alone.
            log_p_of_z, _ = density(model, choices, *frozen(model_args))
            return log_p - log_q, log_p_of_z - log_q

        log_w, log_w_of_z = particles(particle, count)
        weights = jax.lax.stop_gradient(jax.nn.softmax(log_w))
        # Value zero; its gradient turns the path coefficient w_k into w_k^2 for the guide only.
        frozen_z = jax.lax.stop_gradient(log_w_of_z)
        reweight = jnp.sum((weights**2 - weights) * (log_w_of_z - frozen_z))
        return jax.nn.logsumexp(log_w) - math.log(count) + reweight


__all__ = ["iwae", "iwae_dreg"]
