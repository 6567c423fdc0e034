"""Measure-valued derivatives: differences of the program at coupled perturbed samples.

A weak derivative writes ``d/dθ p(x; θ) = c(θ) (p⁺(x) - p⁻(x))`` with two probability
distributions ``p±``, so ``d/dθ E[f] = c(θ) (E_{p⁺}[f] - E_{p⁻}[f])``. For a site with several
elements each element is perturbed on its own (one pair of evaluations per element). The
decompositions used, with ``x`` the site's own draw:

===========  ============  ======================  ================================
distribution parameter     c                        p⁺ / p⁻
===========  ============  ======================  ================================
Bernoulli    probs p       1                        1 / 0
Categorical  probs p_k     1                        k / x  (Σ_k dp_k = 0)
Normal       loc μ         1 / (σ √(2π))            μ + σR / μ - σR,  R ~ Rayleigh(1)
Normal       scale σ       1 / σ                    μ ± σM (double-sided Maxwell) / x
Poisson      rate λ        1                        x + 1 / x
Geometric    probs p       1 / p                    x / 1 + x + x'  (x' an independent draw)
===========  ============  ======================  ================================

A distribution adapted from another library (`progvi.interop`) takes part through the numpyro
distribution of the same family that its ``as_numpyro()`` returns; its own sampler draws ``x``.

References:
  Pflug, "Sampling derivatives of probabilities", Computing 1989.
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in Machine Learning", JMLR
  2020, §6.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from .strategy import Strategy, require

_BERNOULLI = (nd.BernoulliProbs, nd.BernoulliLogits)
_CATEGORICAL = (nd.CategoricalProbs, nd.CategoricalLogits)
_GEOMETRIC = (nd.GeometricProbs, nd.GeometricLogits)
_SUPPORTED = (*_BERNOULLI, *_CATEGORICAL, *_GEOMETRIC, nd.Normal, nd.Poisson)


def _param_tangent(dist, tangent, name, event=()):
    """The parameter `name` of `dist` and its tangent, broadcast to batch shape + `event`."""
    value, dvalue = jax.jvp(lambda d: getattr(d, name), (dist,), (tangent,))
    shape = dist.batch_shape + event
    return jnp.broadcast_to(value, shape), jnp.broadcast_to(dvalue, shape)


def _terms(key, dist, tangent, x):
    """The (weight tangent, p⁺ value, p⁻ value or None for x) triples of one site."""
    if isinstance(dist, _BERNOULLI):
        _, dp = _param_tangent(dist, tangent, "probs")
        return [(dp, jnp.ones_like(x), jnp.zeros_like(x))]
    if isinstance(dist, _CATEGORICAL):
        _, dp = _param_tangent(dist, tangent, "probs", dist.probs.shape[-1:])
        return [(dp[..., k], jnp.full_like(x, k), None) for k in range(dp.shape[-1])]
    if isinstance(dist, nd.Poisson):
        _, drate = _param_tangent(dist, tangent, "rate")
        return [(drate, x + 1, None)]
    if isinstance(dist, _GEOMETRIC):
        p, dp = _param_tangent(dist, tangent, "probs")
        other = dist.sample(key)
        return [(-dp / p, 1 + x + other, None)]
    mu, dmu = _param_tangent(dist, tangent, "loc")
    sigma, dsigma = _param_tangent(dist, tangent, "scale")
    k_r, k_m, k_s = jax.random.split(key, 3)
    rayleigh = jnp.sqrt(2.0 * jax.random.exponential(k_r, x.shape))
    maxwell = jnp.linalg.norm(jax.random.normal(k_m, (*x.shape, 3)), axis=-1)
    sign = jnp.where(jax.random.bernoulli(k_s, 0.5, x.shape), 1.0, -1.0)
    return [
        (dmu / (sigma * math.sqrt(2 * math.pi)), mu + sigma * rayleigh, mu - sigma * rayleigh),
        (dsigma / sigma, mu + sign * sigma * maxwell, None),
    ]


def _family(dist):
    """`dist`, or the numpyro distribution of the same family an adapted one stands for."""
    as_numpyro = getattr(dist, "as_numpyro", None)
    return dist if as_numpyro is None else as_numpyro()


def _each_element(f, x, values):
    """``f`` evaluated at ``x`` with one element replaced by the same element of ``values``."""
    flat, flat_values = x.reshape(-1), jnp.asarray(values, x.dtype).reshape(-1)
    index = jnp.arange(flat.shape[0])
    return jax.vmap(lambda i: f(flat.at[i].set(flat_values[i]).reshape(x.shape)))(index)


@dataclasses.dataclass(frozen=True)
class MVD(Strategy):
    """Measure-valued derivative for Bernoulli, Categorical, Normal, Poisson and Geometric."""

    name = "mvd"

    def check(self, address, dist):
        require(
            isinstance(_family(dist), _SUPPORTED), address, self, dist,
            "progvi has no weak-derivative decomposition for it",
            "pv.mvd supports Bernoulli, Categorical, Normal, Poisson and Geometric; use "
            "pv.reparam or pv.reinforce here.",
        )

    def jvp(self, key, dist, tangent, kont):
        k_x, k_terms = jax.random.split(key)
        x = dist.sample(k_x)
        ret, dret = kont.dual(x)
        if getattr(dist, "as_numpyro", None) is not None:
            dist, tangent = jax.jvp(_family, (dist,), (tangent,))
        for weight, plus, minus in _terms(k_terms, dist, tangent, x):
            f_plus = _each_element(kont.pure, x, plus)
            f_minus = ret[None] if minus is None else _each_element(kont.pure, x, minus)
            dret = dret + jnp.tensordot(weight.reshape(-1), f_plus - f_minus, axes=1)
        return ret, dret


mvd = MVD()
"""The measure-valued derivative strategy with its default settings; see `MVD`."""
