"""genjax 1.0.14's distributions as numpyro distributions, and their ADEV estimators as strategies.

genjax's distributions are TFP distributions behind a sampler that binds its own primitive;
progvi's strategies need a numpyro distribution (``rsample``, ``enumerate_support``, the MVD
families). Each genjax distribution is recognised by its log density function (a derived one,
such as ``normal_reparam``, scores with its base's ``logpdf`` method), and rebuilt as the numpyro
distribution with the same density, taking the arguments TFP's constructor takes, by position or
by name. Its sampler says which estimator genjax would use (``NormalREPARAM``, ``REINFORCE``,
``FlipEnum``, ...); that becomes the site's strategy, which `pv.with_strategies` overrides.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ..adev import enum, enum_parallel, mvd, reinforce, reparam
from ..adev.errors import ProgviError


class GenJAXError(ProgviError, TypeError):
    """A genjax construct that progvi cannot reinterpret (named in the message, with the fix)."""


class Converted(NamedTuple):
    """A genjax distribution applied to arguments, as progvi samples it."""

    dist: dist.Distribution  # the numpyro distribution with the same density
    strategy: Any  # the strategy genjax's own estimator names, or None (progvi's default)
    to_genjax: Callable  # the value as the genjax body expects it (a flip's boolean)


def _same(value):
    return value


def _boolean(value):
    return value.astype(jnp.bool_)


def _floating(value):
    # TFP's counting distributions draw floats; numpyro's (and progvi's choices) are integers.
    return value.astype(jnp.result_type(float))


def _one_of(where, logits, probs):
    if (logits is None) == (probs is None):
        raise TypeError(f"{where} takes exactly one of logits= and probs=.")
    return logits is None


def _bernoulli(logits=None, probs=None, dtype=None):
    if _one_of("genjax.bernoulli", logits, probs):
        return dist.BernoulliProbs(probs)
    return dist.BernoulliLogits(logits)


def _count(total_count):
    # TFP takes a float count; numpyro's binomial and multinomial draw with an integer one, and
    # the multinomial needs it as a Python int unless total_count_max is given.
    if isinstance(total_count, jax.core.Tracer):
        return total_count.astype(jnp.result_type(int))
    return int(total_count)


def _binomial(total_count, logits=None, probs=None):
    total_count = _count(total_count)
    if _one_of("genjax.binomial", logits, probs):
        return dist.BinomialProbs(probs, total_count=total_count)
    return dist.BinomialLogits(logits, total_count=total_count)


def _multinomial(total_count, logits=None, probs=None):
    total_count = _count(total_count)
    if _one_of("genjax.multinomial", logits, probs):
        return dist.MultinomialProbs(probs, total_count=total_count)
    return dist.MultinomialLogits(logits, total_count=total_count)


def _negative_binomial(total_count, logits=None, probs=None):
    if _one_of("genjax.negative_binomial", logits, probs):
        return dist.NegativeBinomialProbs(total_count, probs)
    return dist.NegativeBinomialLogits(total_count, logits)


class _GeometricProbs(dist.GeometricProbs):
    """numpyro's geometric, drawing integers as its discrete support says (numpyro's draws floats,
    which progvi's choice checks reject for a discrete distribution)."""

    def sample(self, key, sample_shape=()):
        return super().sample(key, sample_shape).astype(jnp.result_type(int))


class _GeometricLogits(dist.GeometricLogits):
    """As `_GeometricProbs`, parameterized by logits."""

    def sample(self, key, sample_shape=()):
        return super().sample(key, sample_shape).astype(jnp.result_type(int))


def _geometric(logits=None, probs=None):
    if _one_of("genjax.geometric", logits, probs):
        return _GeometricProbs(probs)
    return _GeometricLogits(logits)


def _poisson(rate=None, log_rate=None):
    if (rate is None) == (log_rate is None):
        raise TypeError("genjax.poisson takes exactly one of rate= and log_rate=.")
    return dist.Poisson(jnp.exp(log_rate) if rate is None else rate)


def _gamma(concentration, rate=None, log_rate=None):
    if (rate is None) == (log_rate is None):
        raise TypeError("genjax.gamma takes exactly one of rate= and log_rate=.")
    return dist.Gamma(concentration, jnp.exp(log_rate) if rate is None else rate)


# genjax name -> (numpyro constructor with TFP's signature, value conversion for the body).
# TFP's InverseGamma(concentration, scale) has density proportional to x^(-a-1) exp(-scale / x),
# numpyro's InverseGamma(concentration, rate) the same with rate in place of scale; TFP's Weibull
# takes (concentration, scale), numpyro's (scale, concentration).
_BUILT_IN = {
    "normal": (dist.Normal, _same),
    "bernoulli": (_bernoulli, _same),
    "flip": (lambda p: dist.BernoulliProbs(p), _boolean),
    "categorical": (lambda logits: dist.CategoricalLogits(logits), _same),
    "geometric": (_geometric, _floating),
    "beta": (lambda concentration1, concentration0: dist.Beta(concentration1, concentration0),
             _same),
    "uniform": (lambda low=0.0, high=1.0: dist.Uniform(low, high), _same),
    "exponential": (lambda rate: dist.Exponential(rate), _same),
    "poisson": (_poisson, _floating),
    "multivariate_normal": (
        lambda loc, covariance_matrix: dist.MultivariateNormal(
            loc, covariance_matrix=covariance_matrix), _same),
    "dirichlet": (lambda concentration: dist.Dirichlet(concentration), _same),
    "binomial": (_binomial, _floating),
    "gamma": (_gamma, _same),
    "log_normal": (lambda loc, scale: dist.LogNormal(loc, scale), _same),
    "student_t": (lambda df, loc, scale: dist.StudentT(df, loc, scale), _same),
    "laplace": (lambda loc, scale: dist.Laplace(loc, scale), _same),
    "half_normal": (lambda scale: dist.HalfNormal(scale), _same),
    "inverse_gamma": (lambda concentration, scale: dist.InverseGamma(concentration, scale),
                      _same),
    "weibull": (lambda concentration, scale: dist.Weibull(scale, concentration), _same),
    "cauchy": (lambda loc, scale: dist.Cauchy(loc, scale), _same),
    "chi2": (lambda df: dist.Chi2(df), _same),
    "multinomial": (_multinomial, _floating),
    "negative_binomial": (_negative_binomial, _floating),
}
# genjax.zipf has no numpyro counterpart; it is reported as unsupported.


def _table() -> dict:
    """Each supported log density function -> (name, constructor, value conversion)."""
    from genjax import adev, distributions

    table = {
        getattr(distributions, name)._logpdf.value: (name, make, convert)
        for name, (make, convert) in _BUILT_IN.items()
    }
    # The one ADEV distribution that scores with a function of its own: loc + scale_diag * eps.
    table[adev.multivariate_normal_diag_reparam._logpdf.value] = (
        "multivariate_normal_diag",
        lambda loc, scale_diag: dist.Normal(loc, scale_diag).to_event(1),
        _same,
    )
    return table


def _strategy(sampler):
    """The progvi strategy for genjax's ADEV estimator `sampler`, None for a plain sampler."""
    from genjax import adev

    estimators = [
        ((adev.NormalREPARAM, adev.UniformREPARAM, adev.MultivariateNormalDiagREPARAM,
          adev.MultivariateNormalREPARAM), reparam),
        ((adev.REINFORCE,), reinforce),
        ((adev.FlipEnum,), enum),
        ((adev.FlipMVD,), mvd),
        ((adev.FlipEnumParallel, adev.CategoricalEnumParallel), enum_parallel),
    ]
    for classes, strategy in estimators:
        if isinstance(sampler, classes):
            return strategy
    if isinstance(sampler, adev.ADEVPrimitive):
        return reinforce  # an estimator progvi does not know: its unbiased fallback
    return None


def _base_logpdf(gen_dist):
    import genjax

    logpdf = gen_dist._logpdf.value
    owner = getattr(logpdf, "__self__", None)
    if inspect.ismethod(logpdf) and isinstance(owner, genjax.Distribution):
        return owner._logpdf.value  # a derived distribution scores with its base's method
    return logpdf


def convert(gen_dist, args: tuple, kwargs: dict, where: str) -> Converted:
    """The numpyro distribution, strategy and value conversion of ``gen_dist(*args, **kwargs)``.

    Raises a `GenJAXError` naming `where` if the distribution is not one progvi knows.
    """
    entry = _table().get(_base_logpdf(gen_dist))
    if entry is None:
        name = gen_dist.name.value or type(gen_dist._sample.value).__name__
        raise GenJAXError(
            f"{where} samples the genjax distribution {name!r}, which progvi cannot "
            "reinterpret: it knows genjax's built-in distributions (genjax.normal, "
            "genjax.flip, genjax.categorical, ...) and their ADEV forms, but not a "
            "distribution made with genjax.core.distribution or genjax.tfp_distribution, whose "
            "density it cannot see. Sample a built-in genjax distribution there, or write "
            "the guide with pv.gen and a numpyro distribution."
        )
    name, make, to_genjax = entry
    try:
        numpyro_dist = make(*args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{where}: genjax.{name} was called with arguments that its TFP "
                        f"constructor does not take ({err}).") from None
    return Converted(numpyro_dist, _strategy(gen_dist._sample.value), to_genjax)
