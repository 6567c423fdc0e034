"""Strategies written by a user against the public interface are unbiased.

Three strategies, each in a few lines: the antithetic example of docs/custom_strategy.md (a
continuation rule), a local rule that is pathwise in a Normal's location and score-function in its
scale, and a continuation rule whose REINFORCE baseline is the rest of the program run (with
`kont.pure`) on an independent draw.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

NUM = 20_000

# ---------------------------------------------------------------------------------------------
# The example of docs/custom_strategy.md, as written there.


@dataclasses.dataclass(frozen=True)
class Antithetic(pv.Strategy):
    name = "antithetic"

    def check(self, address, dist_):
        if not isinstance(dist_, dist.Normal):
            raise pv.StrategyError(
                f"sample site {address!r}: antithetic needs a Normal, got {type(dist_).__name__}."
            )

    def jvp(self, key, dist_, tangent, kont):
        x = dist_.sample(key)
        total, total_tangent = 0.0, 0.0
        for value in (x, 2 * dist_.loc - x):
            value = jax.lax.stop_gradient(value)
            ret, dret = kont.dual(value)
            _, score = jax.jvp(lambda d: d.log_prob(value), (dist_,), (tangent,))  # noqa: B023
            total, total_tangent = total + ret / 2, total_tangent + (dret + ret * score) / 2
        return total, total_tangent


# ---------------------------------------------------------------------------------------------
# A local rule: d/dθ E[f(x)] = E[f'(x)] dμ + E[(f(x) - b) ∂σ log p(x)] dσ for x ~ N(μ, σ²).


@dataclasses.dataclass(frozen=True)
class LocationPathScaleScore(pv.Strategy):
    """Pathwise in a Normal's location, score function (with a baseline) in its scale."""

    baseline: Any = 0.0
    name = "location_path_scale_score"
    dynamic_fields = ("baseline",)

    def check(self, address, dist_):
        if not isinstance(dist_, dist.Normal):
            raise pv.StrategyError(
                f"sample site {address!r}: location_path_scale_score needs a Normal, got "
                f"{type(dist_).__name__}. Use pv.reparam or pv.reinforce for it."
            )

    def local(self, key, dist_, tangent):
        x = jax.lax.stop_gradient(dist_.sample(key))
        # Moving the location moves every draw by the same amount.
        _, dloc = jax.jvp(lambda d: jnp.broadcast_to(d.loc, x.shape), (dist_,), (tangent,))
        # The scale acts only through the density of the fixed draw (location held at its value).
        scale_only = lambda s: jnp.sum(dist.Normal(dist_.loc, s).log_prob(x))
        _, score = jax.jvp(scale_only, (dist_.scale,), (tangent.scale,))
        return pv.Local(x, dloc, score, jax.lax.stop_gradient(self.baseline))


# ---------------------------------------------------------------------------------------------
# A continuation rule: REINFORCE whose baseline is the program's value at an independent draw.


@dataclasses.dataclass(frozen=True)
class ResampledBaseline(pv.Strategy):
    """Score function with baseline ``f(x')``, ``x'`` an independent draw: unbiased, since the
    baseline does not depend on ``x``."""

    name = "resampled_baseline"

    def jvp(self, key, dist_, tangent, kont):
        key_x, key_other = jax.random.split(key)
        x = jax.lax.stop_gradient(dist_.sample(key_x))
        baseline = jax.lax.stop_gradient(kont.pure(dist_.sample(key_other)))
        ret, dret = kont.dual(x)
        _, score = jax.jvp(lambda d: jnp.sum(d.log_prob(x)), (dist_,), (tangent,))
        return ret, dret + (ret - baseline) * score


# ---------------------------------------------------------------------------------------------
# Programs and their exact expectations.


@pv.expectation
def exp_sin(p):
    x = pv.sample("x", dist.Normal(p["loc"], p["scale"]))
    return jnp.exp(0.7 * x) + jnp.sin(x) + p["loc"] * x


def e_exp_sin(p):
    m, s = p["loc"], p["scale"]
    return np.exp(0.7 * m + 0.245 * s**2) + np.sin(m) * np.exp(-0.5 * s**2) + m**2


@pv.expectation
def coin_then_normal(p):
    b = pv.sample("b", dist.Bernoulli(logits=p["logit"]))
    x = pv.sample("x", dist.Normal(p["loc"] + 1.5 * b, p["scale"]))
    return (1.0 + b) * jnp.sin(x) + p["loc"] * b


def e_coin_then_normal(p):
    q, m, s = 1.0 / (1.0 + np.exp(-p["logit"])), p["loc"], p["scale"]
    return sum(
        prob * ((1.0 + b) * np.sin(m + 1.5 * b) * np.exp(-0.5 * s**2) + m * b)
        for b, prob in ((0.0, 1.0 - q), (1.0, q))
    )


NORMAL = {"loc": 0.3, "scale": 0.8}
COIN = {"logit": 0.4, "loc": 0.3, "scale": 0.9}


def _jax(params):
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)


CASES = [
    pytest.param(exp_sin, e_exp_sin, NORMAL, {"x": Antithetic()}, id="antithetic"),
    pytest.param(
        coin_then_normal, e_coin_then_normal, COIN, {"x": Antithetic()}, id="antithetic-later-site"
    ),
    pytest.param(exp_sin, e_exp_sin, NORMAL, {"x": LocationPathScaleScore()}, id="local"),
    pytest.param(
        exp_sin,
        e_exp_sin,
        NORMAL,
        {"x": LocationPathScaleScore(baseline=2.0)},
        id="local-baseline",
    ),
    pytest.param(
        coin_then_normal,
        e_coin_then_normal,
        COIN,
        {"b": pv.enum, "x": LocationPathScaleScore(baseline=1.0)},
        id="enum-then-local",
    ),
    pytest.param(exp_sin, e_exp_sin, NORMAL, {"x": ResampledBaseline()}, id="resampled"),
    pytest.param(
        coin_then_normal,
        e_coin_then_normal,
        COIN,
        {"b": ResampledBaseline(), "x": pv.reparam},
        id="resampled-then-reparam",
    ),
]


@pytest.mark.parametrize("program, expectation, params, strategies", CASES)
def test_custom_strategy_is_unbiased(stats, program, expectation, params, strategies):
    program = pv.with_strategies(program, strategies)
    values, grads = stats.sample_value_and_grads(program, 0, NUM, _jax(params))
    stats.check_unbiased(values, np.float64(expectation(params)))
    stats.check_unbiased(grads, stats.numerical_grad(expectation, params))


def test_antithetic_pairs_reduce_the_variance_of_reinforce(stats):
    # For a monotone f the reflected draw is negatively correlated with the first one.
    @pv.expectation
    def exp_of_normal(mu):
        return jnp.exp(pv.sample("x", dist.Normal(mu, 1.0)))

    variances = []
    for strategy in (pv.reinforce, Antithetic()):
        program = pv.with_strategies(exp_of_normal, {"x": strategy})
        grads = stats.sample_grads(program, 1, NUM, jnp.float32(0.0))
        stats.check_unbiased(grads, np.float64(np.exp(0.5)))  # d/dμ exp(μ + 1/2) at μ = 0
        variances.append(grads.var())
    assert variances[1] < 0.7 * variances[0]


def test_local_strategy_runs_inside_a_scan(stats):
    # A local rule needs no continuation, so it works in a lax.scan body: E[Σ_t sin(x_t)]
    # with x_t ~ N(μ t, σ) for t = 0, 1, 2.
    @pv.expectation
    def scanned(p):
        def step(total, t):
            x = pv.sample("x", dist.Normal(p["loc"] * t, p["scale"]))
            return total + jnp.sin(x), None

        return jax.lax.scan(step, 0.0, jnp.arange(3.0))[0]

    def exact(p):
        return sum(np.sin(p["loc"] * t) for t in range(3)) * np.exp(-0.5 * p["scale"] ** 2)

    program = pv.with_strategies(scanned, {"x": LocationPathScaleScore()})
    grads = stats.sample_grads(program, 2, NUM, _jax(NORMAL))
    stats.check_unbiased(grads, stats.numerical_grad(exact, NORMAL))


def test_a_baseline_computed_in_the_program_is_a_pytree_leaf():
    strategy = LocationPathScaleScore(baseline=jnp.float32(1.5))
    assert jax.tree.leaves(strategy) == [jnp.float32(1.5)]
    rebuilt = jax.tree.map(lambda b: b + 1.0, strategy)
    assert isinstance(rebuilt, LocationPathScaleScore) and rebuilt.baseline == 2.5


@pytest.mark.parametrize(
    "strategy, match",
    [
        (Antithetic(), "'x': antithetic needs a Normal, got Gamma"),
        (LocationPathScaleScore(), "'x': location_path_scale_score needs a Normal, got Gamma"),
    ],
    ids=["antithetic", "local"],
)
def test_check_rejects_unsupported_distributions_at_trace_time(strategy, match):
    @pv.expectation
    def program(a):
        return pv.sample("x", dist.Gamma(a, 1.0), strategy=strategy)

    with pytest.raises(pv.StrategyError, match=match):
        program.trace(2.0)


def test_a_continuation_strategy_inside_vmap_is_refused_with_the_site_named():
    @pv.expectation
    def program(mu):
        draw = lambda m: pv.sample("x", dist.Normal(m, 1.0), strategy=ResampledBaseline())
        return jnp.sum(jax.vmap(draw)(mu + jnp.arange(3.0)))

    with pytest.raises(pv.StrategyError, match="'x' is inside a `jax.vmap`.*resampled_baseline"):
        program.grad(jax.random.key(0), 0.5)
