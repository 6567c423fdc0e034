"""Forward KL through a sampling-importance-resampling family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from ...gen import GenerativeFunction, density, simulate
from ..normalize import normalize
from ._weights import frozen
from .errors import check_call, check_count, explained


def forward_kl(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, num_particles: int,
    *, model_args: tuple = (), guide_args: tuple = (), proposal: GenerativeFunction | None = None,
    proposal_args: tuple | None = None, rejuvenate: Any = None,
) -> jax.Array:
    r"""One-draw estimate of the forward KL from the posterior to the guide, through SIR.

    The posterior is approximated by the family ``pv.normalize(model, proposal, K)``:
    draw ``z_1..z_K`` from the proposal (by default the guide itself, held fixed), weigh them
    by $w_k = p(x, z_k) / r(z_k)$ and resample one, ``z``. The estimate is

    $$
        \log \hat p(z) - \log q_\phi(z), \qquad
        \log \hat p(z) = \log p(x, z) - \log \frac{1}{K} \sum_k w_k,
    $$

    whose expectation is at least $\mathrm{KL}(q_{\mathrm{SIR}} \,\|\, q_\phi)$ (the
    reciprocal of $\hat p$ is unbiased for $1 / q_{\mathrm{SIR}}$) and tends to
    $\mathrm{KL}(p(z \mid x) \,\|\, q_\phi)$ as K grows. Everything but
    $\log q_\phi(z)$ is held fixed, so the gradient is
    $-\nabla_\phi \log q_\phi(z)$: the resampled form of `pv.wake_q`, whose gradient is
    its expectation over the resampling. Minimize it, per datapoint; the model's parameters get
    no gradient.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices, with an exact density.
      obs: the observed choices of the model.
      num_particles: K, a Python int of at least 1.
      model_args: the model's arguments, a tuple (not differentiated).
      guide_args: the guide's arguments, a tuple.
      proposal: the generative function that proposes the K particles; default: the guide.
      proposal_args: its arguments, a tuple (not differentiated); default: `guide_args`.
      rejuvenate: an MCMC kernel applied to the resampled draw (resample-move, e.g.
        ``pv.interop.blackjax.mala(0.1, num_steps=10)``); see `pv.normalize`. The expectation
        then bounds the KL from the rejuvenated family, which is closer to the posterior.

    Returns:
      A scalar: one estimate of the forward KL (in expectation, an upper bound of
      $\mathrm{KL}(q_{\mathrm{SIR}} \,\|\, q_\phi)$).

    References:
      Rubin, "Using the SIR algorithm to simulate posterior distributions", Bayesian
      Statistics 3, 1988.
      Bornschein & Bengio, "Reweighted Wake-Sleep", ICLR 2015.
      Becker et al., "Probabilistic Programming with Programmable Variational Inference",
      PLDI 2024.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     z = pv.sample("z", dist.Normal(0.0, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> @pv.expectation
      ... def objective(m):
      ...     return pv.forward_kl(model, guide, {"x": 2.0}, 50, guide_args=(m,))
      >>> keys = jax.random.split(jax.random.key(0), 2000)
      >>> grads = jax.vmap(lambda k: objective.grad(k, 0.0))(keys)
      >>> print(f"{grads.mean():.1f}")  # -E_posterior[z - m]: the posterior mean is 1
      -1.0
    """
    check_call("forward_kl", obs, model_args=model_args, guide_args=guide_args)
    with explained("forward_kl", model, guide, obs, model_args, guide_args):
        count = check_count("forward_kl", num_particles)
        if proposal is None:
            proposal = guide
            proposal_args = guide_args if proposal_args is None else proposal_args
        proposal_args = () if proposal_args is None else proposal_args
        check_call("forward_kl", obs, proposal_args=proposal_args)
        # Frozen target and proposal: the resampled draw and its density estimate are constants.
        family = normalize(model, proposal, count, target_args=frozen(model_args),
                           observations=obs, rejuvenate=rejuvenate)
        tr = simulate(family, *frozen(proposal_args))
        log_q, _ = density(guide, jax.lax.stop_gradient(tr.choices), *guide_args)
        return tr.score - log_q


__all__ = ["forward_kl"]
