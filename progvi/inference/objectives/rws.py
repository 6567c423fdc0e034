"""Reweighted wake-sleep: wake-p for the model, wake-q for the guide."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ...adev.particles import particles
from ...gen import GenerativeFunction, density, merge, simulate
from ._weights import frozen
from .errors import check_call, check_count, explained


def _wake(model, guide, obs, count, model_args, guide_args, score_guide=True):
    """Log weights with a frozen guide and, if asked, log q of each draw as a function of the
    guide's arguments."""

    def particle():
        # Frozen guide: no path and no score term reaches the guide's parameters.
        tr = simulate(guide, *frozen(guide_args))
        log_p, _ = density(model, merge(tr.choices, obs), *model_args)
        if not score_guide:
            return log_p - tr.score, None
        log_q, _ = density(guide, jax.lax.stop_gradient(tr.choices), *guide_args)
        return log_p - tr.score, log_q

    return particles(particle, count)


def _bound(log_w, count):
    return jax.nn.logsumexp(log_w) - math.log(count)


def _wake_q_term(log_w, log_q):
    # Self-normalized weights, held fixed: the gradient is sum_k w~_k grad log q(z_k).
    weights = jax.lax.stop_gradient(jax.nn.softmax(log_w))
    return jnp.sum(weights * log_q)


def wake_p(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    *, model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""Reweighted wake-sleep's wake phase for the model: the IWAE bound, guide held fixed.

    $$
        \hat{\mathcal{L}}_K = \log \frac{1}{K} \sum_{k=1}^K \frac{p_\theta(x, z_k)}{q(z_k)},
        \quad z_k \sim q, \qquad
        \nabla_\theta \hat{\mathcal{L}}_K = \sum_k \tilde w_k \nabla_\theta
        \log p_\theta(x, z_k).
    $$

    The guide's arguments are frozen, so the draws carry no gradient: neither a path nor a
    REINFORCE score term reaches the guide, and the gradient (for the model's parameters only)
    is an unbiased estimate of the IWAE bound's. Write it for one datapoint and train with
    ``pv.fit(..., per_datapoint=True, batch_size=B)`` to minibatch it.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices (any strategies: it is not
        differentiated).
      obs: the observed choices, merged into each particle's choices for the model.
      num_particles: K, a Python int of at least 1.
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple (not differentiated).

    Returns:
      A scalar: one unbiased estimate of the IWAE bound; maximize it.

    References:
      Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015.
      Le, Kosiorek, Siddharth, Teh & Wood, "Revisiting Reweighted Wake-Sleep for Models with
      Stochastic Control Flow", UAI 2019.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model(mu):
      ...     z = pv.sample("z", dist.Normal(mu, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> @pv.expectation
      ... def objective(mu, m):
      ...     return pv.wake_p(model, guide, {"x": 2.0}, 5, model_args=(mu,), guide_args=(m,))
      >>> d_mu, d_m = objective.grad(jax.random.key(0), 0.0, 0.5, argnums=(0, 1))
      >>> print(f"{d_m:.1f}")  # the guide is not trained by wake-p
      0.0
    """
    check_call("wake_p", obs, model_args=model_args, guide_args=guide_args)
    with explained("wake_p", model, guide, obs, model_args, guide_args):
        count = check_count("wake_p", num_particles)
        log_w, _ = _wake(model, guide, obs, count, model_args, guide_args, score_guide=False)
        return _bound(log_w, count)


def wake_q(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    *, model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""Reweighted wake-sleep's wake phase for the guide: self-normalized forward KL.

    $$
        \hat{\mathcal{J}} = \sum_{k=1}^K \tilde w_k \log q_\phi(z_k),\quad
        z_k \sim q_\phi,\ \tilde w_k = \frac{w_k}{\sum_j w_j}, \qquad
        \nabla_\phi \hat{\mathcal{J}} \approx \mathbb{E}_{p(z \mid x)}[\nabla_\phi
        \log q_\phi(z)] = -\nabla_\phi \mathrm{KL}(p(z \mid x) \,\|\, q_\phi).
    $$

    The draws and the weights are held fixed (stop_gradient), so only ``log q`` of each draw
    is differentiated. Self-normalized importance sampling makes the gradient biased for
    finite K (consistent as K grows). It needs no reparameterization, so it trains guides with
    discrete choices; the model's parameters get no gradient. Maximize it, per datapoint.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices, with an exact density.
      obs: the observed choices, merged into each particle's choices for the model.
      num_particles: K, a Python int of at least 1.
      model_args: the model's arguments, a tuple (not differentiated).
      guide_args: the guide's arguments, a tuple.

    Returns:
      A scalar: the self-normalized estimate of $\mathbb{E}_{p(z \mid x)}[\log q(z)]$.

    References:
      Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model(mu):
      ...     z = pv.sample("z", dist.Normal(mu, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> @pv.expectation
      ... def objective(m):
      ...     return pv.wake_q(model, guide, {"x": 2.0}, 50, model_args=(0.0,), guide_args=(m,))
      >>> keys = jax.random.split(jax.random.key(0), 2000)
      >>> grads = jax.vmap(lambda k: objective.grad(k, 0.0))(keys)
      >>> print(f"{grads.mean():.1f}")  # E_posterior[z - m]: the posterior mean is 1
      1.0
    """
    check_call("wake_q", obs, model_args=model_args, guide_args=guide_args)
    with explained("wake_q", model, guide, obs, model_args, guide_args):
        count = check_count("wake_q", num_particles)
        log_w, log_q = _wake(model, guide, obs, count, frozen(model_args), guide_args)
        return _wake_q_term(log_w, log_q)


def rws(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    *, model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""Reweighted wake-sleep in one program: wake-p for the model, wake-q for the guide.

    One set of K draws serves both phases. The value is the IWAE estimate (`pv.wake_p`);
    the wake-q objective is added as a zero-valued term, so the gradient is wake-p's for the
    model's parameters and wake-q's for the guide's:

    $$
        \hat{\mathcal{L}}_K + \big(\hat{\mathcal{J}} - \bar{\hat{\mathcal{J}}}\big),\qquad
        \nabla_\theta = \sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k),\quad
        \nabla_\phi = \sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k).
    $$

    Maximize it, per datapoint (``pv.fit(..., per_datapoint=True)``). Calling `pv.wake_p`
    and `pv.wake_q` in one program would sample the guide's addresses twice, which a program
    forbids; this is that sum with shared draws.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices, with an exact density.
      obs: the observed choices, merged into each particle's choices for the model.
      num_particles: K, a Python int of at least 1.
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple.

    Returns:
      A scalar: one unbiased estimate of the IWAE bound, with the RWS gradients.

    References:
      Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model(mu):
      ...     z = pv.sample("z", dist.Normal(mu, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> def program(objective):
      ...     return pv.expectation(lambda mu, m: objective(
      ...         model, guide, {"x": 2.0}, 5, model_args=(mu,), guide_args=(m,)))
      >>> key = jax.random.key(0)  # the same key draws the same particles in each program
      >>> d_mu, d_m = program(pv.rws).grad(key, 0.0, 0.5, argnums=(0, 1))
      >>> print(f"{d_mu:.4f} {d_m:.4f}")
      1.1022 0.6022
      >>> print(f"{program(pv.wake_p).grad(key, 0.0, 0.5):.4f}")
      1.1022
      >>> print(f"{program(pv.wake_q).grad(key, 0.0, 0.5, argnums=1):.4f}")
      0.6022
    """
    check_call("rws", obs, model_args=model_args, guide_args=guide_args)
    with explained("rws", model, guide, obs, model_args, guide_args):
        count = check_count("rws", num_particles)
        log_w, log_q = _wake(model, guide, obs, count, model_args, guide_args)
        # Wake-q's weights are constants, so its term reaches the guide only; subtracting its value
        # leaves the value wake-p's (the IWAE estimate) and adds wake-q's gradient.
        wake_q_term = _wake_q_term(log_w, log_q)
        return _bound(log_w, count) + wake_q_term - jax.lax.stop_gradient(wake_q_term)


__all__ = ["rws", "wake_p", "wake_q"]
