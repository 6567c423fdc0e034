"""The evidence lower bound, and its sticking-the-landing gradient."""

from __future__ import annotations

from collections.abc import Mapping

import jax

from ...gen import GenerativeFunction, density, merge, simulate
from ._weights import frozen, log_weight
from .errors import check_call, explained


def elbo(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, *,
    model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""One-draw estimate of the evidence lower bound, to call inside an expectation program.

    $$
        \mathcal{L} = \mathbb{E}_{z \sim q}\left[\log p(x, z) - \log q(z)\right]
        \le \log p(x),
        \qquad \hat{\mathcal{L}} = \log p(x, z) - \log q(z),\ z \sim q.
    $$

    The gradient is ADEV's: the draw goes through each choice's strategy (reparameterization
    by default, REINFORCE for discrete choices, or what `pv.with_strategies` sets). With a
    marginal family as the guide (`pv.marginal`), ``log q(z)`` is the family's own unbiased
    estimate for the draw and this is hierarchical VI: HVI with one auxiliary proposal, IWHVI
    with M of them (Sobolev & Vetrov 2019).

    A guide may sum some of its choices out exactly instead of drawing them
    (`GenerativeFunction.elbo_in_program`): a NumPyro guide's sites marked
    ``infer={"enumerate": "parallel"}`` inside plates, each datapoint's on its own.

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices.
      obs: the observed choices, a choice map merged into the guide's choices for the model.
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple.

    Returns:
      A scalar: one unbiased estimate of the ELBO.

    References:
      Jordan, Ghahramani, Jaakkola & Saul, "An Introduction to Variational Methods for
      Graphical Models", Machine Learning 1999.
      Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
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
      >>> @pv.expectation
      ... def objective(m):
      ...     return pv.elbo(model, guide, {"x": 2.0}, guide_args=(m,))
      >>> keys = jax.random.split(jax.random.key(0), 10000)
      >>> grads = jax.vmap(lambda k: objective.grad(k, 0.0))(keys)
      >>> print(f"{grads.mean():.1f}")  # d/dm of -(m^2 + (2 - m)^2) / 2 at m = 0
      2.0
    """
    check_call("elbo", obs, model_args=model_args, guide_args=guide_args)
    with explained("elbo", model, guide, obs, model_args, guide_args):
        summed = (guide.elbo_in_program(model, obs, model_args, guide_args)
                  if isinstance(guide, GenerativeFunction) else None)
        if summed is not None:  # the guide sums some of its choices out exactly
            return summed
        return log_weight(model, guide, obs, model_args, guide_args)[0]


def elbo_stl(
    model: GenerativeFunction, guide: GenerativeFunction, obs: Mapping, *,
    model_args: tuple = (), guide_args: tuple = (),
) -> jax.Array:
    r"""The ELBO with the sticking-the-landing gradient: no score term for the guide.

    $$
        \hat{\mathcal{L}} = \log p(x, z) - \log q_{\bar\phi}(z),\quad z = z(\epsilon, \phi),
    $$

    where $\bar\phi$ is $\phi$ under `stop_gradient`. The reparameterized gradient
    of the ELBO is $\nabla_z [\log p - \log q] \, \partial_\phi z - \nabla_\phi \log
    q(z)$; the last term has expectation zero, and dropping it leaves an unbiased estimator
    whose variance vanishes when q is the exact posterior (then ``log p(x, z) - log q(z)`` is
    ``log p(x)`` for every z). The value is the ordinary ELBO estimate.

    Use it with guides whose choices are reparameterized and whose density is exact (not a
    marginal family, whose density would be estimated by fresh draws).

    Args:
      model: a generative function over the guide's choices and the observed choices.
      guide: a generative function over the latent choices, reparameterized.
      obs: the observed choices, merged into the guide's choices for the model.
      model_args: the model's arguments, a tuple.
      guide_args: the guide's arguments, a tuple; only their path through z is differentiated.

    Returns:
      A scalar: one unbiased estimate of the ELBO, with the lower-variance gradient.

    References:
      Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient Estimators
      for Variational Inference", NeurIPS 2017.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     z = pv.sample("z", dist.Normal(0.0, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def guide(m, log_s):
      ...     pv.sample("z", dist.Normal(m, jnp.exp(log_s)))
      >>> @pv.expectation
      ... def objective(m, log_s):
      ...     return pv.elbo_stl(model, guide, {"x": 2.0}, guide_args=(m, log_s))
      >>> posterior = (1.0, jnp.log(jnp.sqrt(0.5)))  # the exact posterior N(1, 1/2)
      >>> g = objective.grad(jax.random.key(0), *posterior, argnums=(0, 1))
      >>> print(f"{abs(g[0]):.3f} {abs(g[1]):.3f}")  # zero for every draw
      0.000 0.000
    """
    check_call("elbo_stl", obs, model_args=model_args, guide_args=guide_args)
    with explained("elbo_stl", model, guide, obs, model_args, guide_args):
        tr = simulate(guide, *guide_args)
        log_p, _ = density(model, merge(tr.choices, obs), *model_args)
        # Same value as tr.score; with the guide's parameters frozen, q is differentiated only
        # through the draw, which drops the zero-mean score term.
        log_q, _ = density(guide, tr.choices, *frozen(guide_args))
        return log_p - log_q


__all__ = ["elbo", "elbo_stl"]
