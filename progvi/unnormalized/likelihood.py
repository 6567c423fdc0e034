"""The negative log-likelihood of an energy model, over a log-expectation of its normalizer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from numpyro.distributions import Distribution

from ..adev.expectation import expectation
from ..adev.log_expectation import LogExpectationEstimator, log_expectation
from ..gen import Call
from ..inference import Marginal, Normalize
from ..inference.objectives.errors import ObjectiveError
from ._noise import as_noise, check_data, draw_noise, log_density_of, noise_log_prob

NOISE_LOSSES = ("variance", "forward_kl")


def nll(
    log_f: Callable[..., jax.Array], data: ArrayLike, noise: Any, *,
    estimator: LogExpectationEstimator, model_args: tuple = (),
    noise_loss: str | None = None, noise_samples: int = 64, address: str = "log_z",
) -> jax.Array:
    r"""The negative log-likelihood of an energy model on a batch, to minimize.

    For a model $p_\theta(x) = f_\theta(x) / Z_\theta$ and a noise distribution $q$ that covers
    it, $Z_\theta = \mathbb{E}_{y \sim q}[f_\theta(y) / q(y)]$, so

    $$
    \mathrm{NLL}(\theta) = -\frac{1}{B} \sum_{i=1}^B \log f_\theta(x_i)
    + \log \mathbb{E}_{y \sim q}\left[\frac{f_\theta(y)}{q(y)}\right],
    $$

    the second term a `pv.log_expectation` whose `estimator` decides its value and gradient
    (`pv.compositional` is the paper's MECO, `pv.plug_in` the biased baseline,
    `pv.tangent_bound` an unbiased bound).

    A learned noise: give $q$ parameters of its own (a numpyro distribution whose parameters
    are params, or a call of a generative function ``proposal(phi)``) and a `noise_loss`. The
    log-partition term does not depend on $q$ (its gradient in $q$'s parameters has mean zero),
    so $q$ is held fixed there and trained by a zero-valued term of its own, which leaves the
    model's gradient unchanged: ``"variance"`` minimizes $\log \mathbb{E}_q[w^2]$, the variance
    of the inner estimate $w = f/q$ up to $Z^2$ (the quantity the estimator's rate depends on),
    by reparameterization; ``"forward_kl"`` minimizes $\mathrm{KL}(p_\theta \,\|\, q)$ by
    self-normalized importance sampling with the same draws (RWS's wake-q update).

    Args:
      log_f: ``log_f(x, *model_args)``, the model's unnormalized log density of a batch of
        points (shape (n, *event)), returning shape (n,).
      data: the batch, shape (B, *event).
      noise: $q$: a numpyro distribution (or a TFP one, a flow included), or a generative
        function with one random choice (or a call of one); its density must be exact.
      estimator: the log-expectation estimator of $\log Z_\theta$; its ``num_samples`` K noise
        points are drawn per step as one site (one call of `log_f` on the K points).
      model_args: further arguments of `log_f` (the model's parameters).
      noise_loss: None (a fixed noise), ``"variance"`` or ``"forward_kl"``.
      noise_samples: the noise draws of the noise loss, a Python int >= 2.
      address: the log-expectation's address; its draws are at ``address/y``, the noise
        loss's at ``address_noise/y``.

    Returns:
      A scalar: the estimate of the NLL (plus the noise loss's zero-valued term).

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, optax, progvi as pv
      >>> log_f = lambda x, p: -0.5 * ((x - p["mu"]) / jnp.exp(p["log_s"])) ** 2
      >>> @pv.expectation
      ... def loss(p, x):
      ...     return pv.unnormalized.nll(log_f, x, dist.Normal(0.0, 3.0), model_args=(p,),
      ...                                estimator=pv.compositional(0.05))
      >>> xs = 1.0 + 0.5 * jax.random.normal(jax.random.key(1), (4000,))
      >>> adam = optax.adam(optax.cosine_decay_schedule(0.02, 3000))
      >>> result = pv.fit(jax.random.key(0), loss, {"mu": 0.0, "log_s": 0.0}, adam,
      ...                 direction="minimize", data=xs, batch_size=256, num_steps=3000,
      ...                 progress=False)
      >>> print(f"{result.params['mu']:.1f} {jnp.exp(result.params['log_s']):.1f}")
      1.0 0.5

    References:
      Jiang, Qin, Wu, Chen, Yang & Zhang, "Learning Unnormalized Statistical Models via
      Compositional Optimization", ICML 2023.
    """
    data = check_data("unnormalized.nll", data)
    noise = as_noise(noise)
    _check_noise(noise)
    if noise_loss not in (None, *NOISE_LOSSES):
        raise ObjectiveError(
            f"pv.unnormalized.nll: noise_loss={noise_loss!r}; it must be None (a fixed noise), "
            '"variance" or "forward_kl".'
        )
    model_args = tuple(model_args)

    def log_model(points, args):
        return log_density_of("unnormalized.nll", "log_f", lambda y: log_f(y, *args), points)

    fixed = _stop_gradient(noise)

    # The K noise points of the estimator are drawn as one site of one run: the same estimate
    # for every estimator that sees the runs through their mean, and log_f gets a batch.
    num = estimator.num_samples

    @expectation
    def log_weight():
        ys, log_q = draw_noise("y", fixed, num)
        return jax.nn.logsumexp(log_model(ys, model_args) - log_q) - math.log(num)

    log_z = log_expectation(log_weight, estimator=estimator(num_samples=1), address=address)
    value = -jnp.mean(log_model(data, model_args)) + log_z
    if noise_loss is None:
        return value
    if not (isinstance(noise_samples, int) and noise_samples >= 2):
        raise ObjectiveError(
            f"pv.unnormalized.nll: noise_samples={noise_samples!r}, but it must be a Python int "
            "of at least 2 (the draws of the noise loss), e.g. noise_samples=64."
        )
    frozen_args = jax.tree.map(jax.lax.stop_gradient, model_args)
    if noise_loss == "variance" and isinstance(noise, Distribution) and not noise.has_rsample:
        raise ObjectiveError(
            f"pv.unnormalized.nll: noise_loss=\"variance\" differentiates through the noise "
            f"draws, but the noise {type(noise).__name__} has no reparameterized sampler. Use "
            'noise_loss="forward_kl", which only differentiates log q at fixed points.'
        )
    # The forward KL differentiates log q at fixed points only: they come from the frozen noise,
    # so a noise without a reparameterized sampler adds no score-function term.
    source = noise if noise_loss == "variance" else fixed
    ys, log_q = draw_noise(f"{address}_noise/y", source, noise_samples)
    if noise_loss == "variance":
        log_w = log_model(ys, frozen_args) - log_q
        loss = jax.nn.logsumexp(2.0 * log_w) - jnp.log(noise_samples)
    else:
        ys = jax.lax.stop_gradient(ys)
        log_w = jax.lax.stop_gradient(log_model(ys, frozen_args) - log_q)
        loss = -jnp.sum(jax.nn.softmax(log_w) * noise_log_prob(noise, ys))
    return value + (loss - jax.lax.stop_gradient(loss))


def _check_noise(noise):
    gen_fn = noise.gen_fn if isinstance(noise, Call) else noise
    if isinstance(gen_fn, (Marginal, Normalize)):
        raise ObjectiveError(
            f"pv.unnormalized.nll: the noise is a {type(gen_fn).__name__} family, whose density "
            "is only estimated; the log-weight f(y)/q(y) needs q's exact density. Use a numpyro "
            "distribution or a generative function whose choices are all scored exactly (a "
            "flow, a Gaussian), or fit such a family to it first."
        )


def _stop_gradient(noise):
    if isinstance(noise, Distribution):
        return jax.tree.map(jax.lax.stop_gradient, noise)
    if isinstance(noise, Call):
        return dataclasses.replace(noise, args=jax.tree.map(jax.lax.stop_gradient, noise.args))
    return noise


__all__ = ["nll"]
