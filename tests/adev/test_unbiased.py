"""Every strategy on every distribution it supports is unbiased; enumeration is exact.

Each problem is a program ``E[f(x, θ)]`` with ``x`` drawn at one site and ``f`` nonlinear (and
sometimes depending on θ directly), together with its exact expectation in float64: a closed form,
a sum over the support (truncated far in the tail) or a quadrature. The exact gradient is a
five-point central difference of that expectation. The same program is estimated under each
strategy through `pv.with_strategies`, and the mean of many vmapped estimates must match the exact
gradient within four standard errors.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import integrate, special
from scipy.stats import binom, poisson

import progvi as pv

NUM = 20_000
SUPPORT = np.arange(400.0)  # Poisson(2.5) and Geometric(0.3) have negligible mass beyond 400


@dataclasses.dataclass(frozen=True)
class Problem:
    """One site ``x`` of a distribution, an objective of it, and the exact expectation."""

    program: pv.Expectation  # takes a dict of parameters; its site is at address "x"
    params: dict  # float64 numpy parameters
    expectation: Callable[[dict], float]  # the exact expectation, float64 numpy


def _jax(params):
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)


def _program(site, objective):
    """An expectation program ``p -> f(x, p)`` with ``x ~ site(p)`` sampled at "x"."""

    @pv.expectation
    def program(p):
        return objective(pv.sample("x", site(p)), p, jnp)

    return program


def _discrete(pmf, objective):
    """``Σ_k pmf(k, p) f(k, p)`` over the truncated support."""
    return lambda p: float(np.sum(pmf(SUPPORT, p) * objective(SUPPORT, p, np)))


def _finite(pmf, objective, size):
    support = np.arange(float(size))
    return lambda p: float(np.sum(pmf(support, p) * objective(support, p, np)))


def _normal_quadrature(f, loc, scale):
    """``E[f(x)]`` for ``x ~ N(loc, scale²)``, integrating over ±12 standard deviations."""
    integrand = lambda z: f(loc + scale * z) * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return integrate.quad(integrand, -12.0, 12.0, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


# ---------------------------------------------------------------------------------------------
# Objectives: written once for an array namespace `xp` (jnp in the program, np in the exact sum).


def f_normal(x, p, xp):
    return xp.exp(0.7 * x) + xp.sin(x) + 0.5 * p.get("loc", 0.3) * x**2


def e_normal(p):
    m, s = p.get("loc", 0.3), p.get("scale", 0.8)
    moment = 0.5 * m * (m**2 + s**2)
    return np.exp(0.7 * m + 0.245 * s**2) + np.sin(m) * np.exp(-0.5 * s**2) + moment


def f_no_closed_form(x, p, xp):
    return xp.log1p(x**2) + xp.tanh(2.0 * x)


def f_discrete(x, p, xp):
    """A bounded nonlinear function of a count, depending on the parameters too."""
    theta = p.get("probs", p.get("logits", p.get("rate")))
    return xp.sin(1.3 * x + theta) + 1.0 / (1.0 + x) + 0.2 * theta * x


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _softmax(v):
    e = np.exp(v - np.max(v))
    return e / e.sum()


CAT_VALUES = np.array([0.5, -1.0, 2.0, 0.3])
CAT_MIX = np.array([1.0, -2.0, 0.5, 1.5])


def f_category(x, p, xp):
    """A function of a category that also depends on every parameter.

    Without the direct dependence, the measure-valued derivative of a categorical site has no
    variance (it is the exact sum over categories), and its test would have no power.
    """
    value = xp.asarray(CAT_VALUES)[x.astype(int)]
    theta = p.get("logits", p.get("weights"))
    return xp.sin(3.0 * value) + value**2 + 0.3 * value * xp.sum(xp.asarray(CAT_MIX) * theta)


def _tril(v, xp):
    rows, cols = np.tril_indices(3)
    if xp is np:
        out = np.zeros((3, 3))
        out[rows, cols] = v
        return out
    return jnp.zeros((3, 3)).at[rows, cols].set(v)


W, V = np.array([0.5, -0.3, 0.2]), np.array([0.4, 0.9, -0.6])


def f_mvn(x, p, xp):
    return xp.exp(x @ xp.asarray(W)) + xp.sin(x @ xp.asarray(V))


def e_mvn(p):
    loc, scale = p["loc"], _tril(p["tril"], np)
    lw, lv = scale.T @ W, scale.T @ V
    return np.exp(W @ loc + 0.5 * lw @ lw) + np.sin(V @ loc) * np.exp(-0.5 * lv @ lv)


def e_gamma(p):
    a, b, t = p["concentration"], p["rate"], 0.8
    sqrt_mean = np.exp(special.gammaln(a + 0.5) - special.gammaln(a)) / np.sqrt(b)
    return (b / (b + t)) ** a + sqrt_mean


def e_dirichlet(p):
    a = p["concentration"]
    a0 = a.sum()
    return (a[0] * a[1] + 2 * a[2] * (a[2] + 1)) / (a0 * (a0 + 1))


def e_lognormal(p):
    m, s = p["loc"], p["scale"]
    return np.exp(0.5 * m + s**2 / 8) - np.exp(-m + s**2 / 2)


def _bernoulli_pmf(k, prob):
    return np.where(k == 1, prob, 1.0 - prob)


def _geometric_pmf(k, prob):
    return prob * (1.0 - prob) ** k


PROBLEMS = {
    "normal": Problem(
        _program(lambda p: dist.Normal(p["loc"], p["scale"]), f_normal),
        {"loc": 0.3, "scale": 0.8},
        e_normal,
    ),
    "normal_loc": Problem(
        _program(lambda p: dist.Normal(p["loc"], 0.8), f_normal), {"loc": 0.3}, e_normal
    ),
    "normal_scale": Problem(
        _program(lambda p: dist.Normal(0.3, p["scale"]), f_normal), {"scale": 0.8}, e_normal
    ),
    "normal_quadrature": Problem(
        _program(lambda p: dist.Normal(p["loc"], p["scale"]), f_no_closed_form),
        {"loc": 0.4, "scale": 1.2},
        lambda p: _normal_quadrature(lambda x: f_no_closed_form(x, p, np), p["loc"], p["scale"]),
    ),
    "mvn": Problem(
        _program(
            lambda p: dist.MultivariateNormal(p["loc"], scale_tril=_tril(p["tril"], jnp)), f_mvn
        ),
        {"loc": np.array([0.2, -0.5, 0.1]), "tril": np.array([0.9, 0.3, 0.7, -0.2, 0.4, 0.6])},
        e_mvn,
    ),
    "gamma": Problem(
        _program(
            lambda p: dist.Gamma(p["concentration"], p["rate"]),
            lambda x, p, xp: xp.exp(-0.8 * x) + xp.sqrt(x),
        ),
        {"concentration": 2.5, "rate": 1.5},
        e_gamma,
    ),
    "beta": Problem(
        _program(lambda p: dist.Beta(p["a"], p["b"]), lambda x, p, xp: xp.exp(2.0 * x)),
        {"a": 0.8, "b": 1.7},
        lambda p: special.hyp1f1(p["a"], p["a"] + p["b"], 2.0),
    ),
    "dirichlet": Problem(
        _program(
            lambda p: dist.Dirichlet(p["concentration"]),
            lambda x, p, xp: x[0] * x[1] + 2 * x[2] ** 2,
        ),
        {"concentration": np.array([1.5, 2.0, 0.7])},
        e_dirichlet,
    ),
    "exponential": Problem(
        _program(lambda p: dist.Exponential(p["rate"]), lambda x, p, xp: xp.sin(2.0 * x)),
        {"rate": 1.3},
        lambda p: 2.0 * p["rate"] / (p["rate"] ** 2 + 4.0),
    ),
    "lognormal": Problem(
        _program(
            lambda p: dist.LogNormal(p["loc"], p["scale"]), lambda x, p, xp: xp.sqrt(x) - 1.0 / x
        ),
        {"loc": 0.2, "scale": 0.5},
        e_lognormal,
    ),
    "bernoulli_probs": Problem(
        _program(lambda p: dist.Bernoulli(probs=p["probs"]), f_discrete),
        {"probs": 0.35},
        _finite(lambda k, p: _bernoulli_pmf(k, p["probs"]), f_discrete, 2),
    ),
    "bernoulli_logits": Problem(
        _program(lambda p: dist.Bernoulli(logits=p["logits"]), f_discrete),
        {"logits": -0.4},
        _finite(lambda k, p: _bernoulli_pmf(k, _sigmoid(p["logits"])), f_discrete, 2),
    ),
    "categorical_logits": Problem(
        _program(lambda p: dist.Categorical(logits=p["logits"]), f_category),
        {"logits": np.array([0.2, -0.4, 0.9, 0.1])},
        _finite(lambda k, p: _softmax(p["logits"]), f_category, 4),
    ),
    # Probabilities on the simplex: the weights are normalized in the program, so every tangent
    # keeps the probabilities summing to one.
    "categorical_probs": Problem(
        _program(
            lambda p: dist.Categorical(probs=p["weights"] / jnp.sum(p["weights"])), f_category
        ),
        {"weights": np.array([0.3, 0.1, 0.4, 0.2])},
        _finite(lambda k, p: p["weights"] / p["weights"].sum(), f_category, 4),
    ),
    "binomial": Problem(
        _program(lambda p: dist.Binomial(4, probs=p["probs"]), f_discrete),
        {"probs": 0.35},
        _finite(lambda k, p: binom.pmf(k, 4, p["probs"]), f_discrete, 5),
    ),
    "poisson": Problem(
        _program(lambda p: dist.Poisson(p["rate"]), f_discrete),
        {"rate": 2.5},
        _discrete(lambda k, p: poisson.pmf(k, p["rate"]), f_discrete),
    ),
    "geometric_probs": Problem(
        _program(lambda p: dist.Geometric(probs=p["probs"]), f_discrete),
        {"probs": 0.3},
        _discrete(lambda k, p: _geometric_pmf(k, p["probs"]), f_discrete),
    ),
    "geometric_logits": Problem(
        _program(lambda p: dist.Geometric(logits=p["logits"]), f_discrete),
        {"logits": -0.6},
        _discrete(lambda k, p: _geometric_pmf(k, _sigmoid(p["logits"])), f_discrete),
    ),
}


def _exact_grad(stats, problem):
    return stats.numerical_grad(problem.expectation, problem.params)


def _cases(strategy_id, strategy, names):
    return [pytest.param(strategy, name, id=f"{strategy_id}-{name}") for name in names]


STATISTICAL_CASES = [
    *_cases(
        "reparam",
        pv.reparam,
        [
            "normal",
            "normal_quadrature",
            "mvn",
            "gamma",
            "beta",
            "dirichlet",
            "exponential",
            "lognormal",
        ],
    ),
    *_cases(
        "reinforce",
        pv.reinforce,
        [
            "normal",
            "normal_quadrature",
            "gamma",
            "dirichlet",
            "bernoulli_probs",
            "bernoulli_logits",
            "categorical_logits",
            "categorical_probs",
            "binomial",
            "poisson",
            "geometric_probs",
        ],
    ),
    *_cases(
        "reinforce_baseline",
        pv.reinforce(baseline=0.7),
        ["normal", "bernoulli_probs", "categorical_logits", "poisson"],
    ),
    *_cases(
        "leave_one_out4",
        pv.leave_one_out(num_samples=4),
        ["normal", "exponential", "bernoulli_probs", "categorical_logits", "poisson"],
    ),
    *_cases(
        "leave_one_out2", pv.leave_one_out(num_samples=2), ["bernoulli_logits", "geometric_logits"]
    ),
    *_cases(
        "mvd",
        pv.mvd,
        [
            "normal",
            "normal_loc",
            "normal_scale",
            "normal_quadrature",
            "bernoulli_probs",
            "bernoulli_logits",
            "categorical_probs",
            "categorical_logits",
            "poisson",
            "geometric_probs",
            "geometric_logits",
        ],
    ),
]


@pytest.mark.parametrize(
    "seed, strategy, name",
    [pytest.param(seed, *case.values, id=case.id) for seed, case in enumerate(STATISTICAL_CASES)],
)
def test_estimate_and_gradient_are_unbiased(stats, seed, strategy, name):
    problem = PROBLEMS[name]
    program = pv.with_strategies(problem.program, {"x": strategy})
    values, grads = stats.sample_value_and_grads(program, seed, NUM, _jax(problem.params))
    stats.check_unbiased(values, np.float64(problem.expectation(problem.params)))
    stats.check_unbiased(grads, _exact_grad(stats, problem))


ENUMERABLE = [
    "bernoulli_probs",
    "bernoulli_logits",
    "categorical_logits",
    "categorical_probs",
    "binomial",
]


@pytest.mark.parametrize("strategy", [pv.enum, pv.enum_parallel], ids=["enum", "enum_parallel"])
@pytest.mark.parametrize("name", ENUMERABLE)
def test_enumeration_is_exact(stats, strategy, name):
    problem = PROBLEMS[name]
    program = pv.with_strategies(problem.program, {"x": strategy})
    exact_value, exact_grad = problem.expectation(problem.params), _exact_grad(stats, problem)
    for seed in (0, 1):
        value, grad = program.value_and_grad(jax.random.key(seed), _jax(problem.params))
        stats.check_exact(value, exact_value)
        stats.check_exact(grad, exact_grad)


# ---------------------------------------------------------------------------------------------
# Sites with several elements: each element is its own random choice.


@pv.expectation
def normal_pair(p):
    x = pv.sample("x", dist.Normal(p["loc"], p["scale"]))
    return jnp.exp(0.7 * x[0]) * jnp.sin(x[1]) + x[0] ** 2 * x[1]


def e_normal_pair(p):
    (m0, m1), (s0, s1) = p["loc"], p["scale"]
    return (
        np.exp(0.7 * m0 + 0.245 * s0**2) * np.sin(m1) * np.exp(-0.5 * s1**2) + (m0**2 + s0**2) * m1
    )


BERNOULLI_WEIGHTS = np.array([1.0, -2.0, 0.5])


@pv.expectation
def bernoulli_triple(p):
    b = pv.sample("x", dist.Bernoulli(probs=p["probs"]))
    return jnp.sin(b @ jnp.asarray(BERNOULLI_WEIGHTS)) + b[0] * b[1] * b[2]


def e_bernoulli_triple(p):
    total = 0.0
    for b in np.ndindex(2, 2, 2):
        b = np.array(b, np.float64)
        prob = np.prod(np.where(b == 1, p["probs"], 1.0 - p["probs"]))
        total += prob * (np.sin(b @ BERNOULLI_WEIGHTS) + b[0] * b[1] * b[2])
    return total


VECTOR_SITES = [
    pytest.param(
        normal_pair,
        e_normal_pair,
        {"loc": np.array([0.3, -0.5]), "scale": np.array([0.8, 1.1])},
        strategy,
        id=f"normal_pair-{sid}",
    )
    for sid, strategy in [
        ("reparam", pv.reparam),
        ("reinforce", pv.reinforce),
        ("mvd", pv.mvd),
        ("leave_one_out3", pv.leave_one_out(num_samples=3)),
    ]
] + [
    pytest.param(
        bernoulli_triple,
        e_bernoulli_triple,
        {"probs": np.array([0.2, 0.6, 0.45])},
        strategy,
        id=f"bernoulli_triple-{sid}",
    )
    for sid, strategy in [
        ("reinforce", pv.reinforce),
        ("mvd", pv.mvd),
        ("leave_one_out3", pv.leave_one_out(num_samples=3)),
    ]
]


@pytest.mark.parametrize("program, expectation, params, strategy", VECTOR_SITES)
def test_sites_with_several_elements_are_unbiased(stats, program, expectation, params, strategy):
    values, grads = stats.sample_value_and_grads(
        pv.with_strategies(program, {"x": strategy}), 100, NUM, _jax(params)
    )
    stats.check_unbiased(values, np.float64(expectation(params)))
    stats.check_unbiased(grads, stats.numerical_grad(expectation, params))


# ---------------------------------------------------------------------------------------------
# Two sites with different strategies.


@pv.expectation
def bernoulli_then_normal(p):
    b = pv.sample("b", dist.Bernoulli(logits=p["logit"]))
    x = pv.sample("x", dist.Normal(p["loc"] + 1.5 * b, p["scale"]))
    return (1.0 + b) * jnp.sin(x) + p["loc"] * b


def e_bernoulli_then_normal(p):
    q, m, s = _sigmoid(p["logit"]), p["loc"], p["scale"]
    return sum(
        prob * ((1.0 + b) * np.sin(m + 1.5 * b) * np.exp(-0.5 * s**2) + m * b)
        for b, prob in ((0.0, 1.0 - q), (1.0, q))
    )


TWO_SITE_STRATEGIES = [
    ("enum", pv.enum, "reparam", pv.reparam),
    ("enum_parallel", pv.enum_parallel, "reparam", pv.reparam),
    ("enum", pv.enum, "reinforce", pv.reinforce),
    ("enum_parallel", pv.enum_parallel, "mvd", pv.mvd),
    ("enum", pv.enum, "leave_one_out3", pv.leave_one_out(num_samples=3)),
    ("mvd", pv.mvd, "reparam", pv.reparam),
    ("mvd", pv.mvd, "mvd", pv.mvd),
    ("reinforce", pv.reinforce, "reparam", pv.reparam),
    ("leave_one_out3", pv.leave_one_out(num_samples=3), "reinforce", pv.reinforce),
    ("reinforce_baseline", pv.reinforce(baseline=1.0), "mvd", pv.mvd),
]


@pytest.mark.parametrize(
    "seed, first, second",
    [
        pytest.param(i, s1, s2, id=f"{n1}-then-{n2}")
        for i, (n1, s1, n2, s2) in enumerate(TWO_SITE_STRATEGIES)
    ],
)
def test_two_sites_with_mixed_strategies_are_unbiased(stats, seed, first, second):
    params = {"logit": 0.4, "loc": 0.3, "scale": 0.9}
    program = pv.with_strategies(bernoulli_then_normal, {"b": first, "x": second})
    values, grads = stats.sample_value_and_grads(program, 200 + seed, NUM, _jax(params))
    stats.check_unbiased(values, np.float64(e_bernoulli_then_normal(params)))
    stats.check_unbiased(grads, stats.numerical_grad(e_bernoulli_then_normal, params))


def category_then_count(strategy):
    """An enumerated category picks a Poisson rate; that rate is the later site's baseline."""

    @pv.expectation
    def program(p):
        b = pv.sample("b", dist.Categorical(logits=p["logits"]), strategy=strategy)
        rate = p["rates"][b]
        x = pv.sample("x", dist.Poisson(rate), strategy=pv.reinforce(baseline=jnp.sin(rate)))
        return jnp.sin(x) + 0.3 * b * x

    return program


def e_category_then_count(p):
    probs = _softmax(p["logits"])
    return sum(
        probs[b] * np.sum(poisson.pmf(SUPPORT, rate) * (np.sin(SUPPORT) + 0.3 * b * SUPPORT))
        for b, rate in enumerate(p["rates"])
    )


@pytest.mark.parametrize("strategy", [pv.enum, pv.enum_parallel], ids=["enum", "enum_parallel"])
def test_enumeration_then_reinforce_with_a_baseline_from_an_earlier_value(stats, strategy):
    params = {"logits": np.array([0.3, -0.2, 0.5]), "rates": np.array([1.0, 2.5, 4.0])}
    values, grads = stats.sample_value_and_grads(
        category_then_count(strategy), 300, NUM, _jax(params)
    )
    stats.check_unbiased(values, np.float64(e_category_then_count(params)))
    stats.check_unbiased(grads, stats.numerical_grad(e_category_then_count, params))


@pv.expectation
def baseline_from_earlier_site(p):
    u = pv.sample("u", dist.Normal(p["loc"], 1.0))
    x = pv.sample(
        "x", dist.Normal(p["loc"], p["scale"]), strategy=pv.reinforce(baseline=jnp.sin(u) + u)
    )
    return jnp.sin(x) + u * x


def test_reinforce_with_a_baseline_drawn_at_an_earlier_site(stats):
    params = {"loc": 0.3, "scale": 0.8}

    def exact(p):
        return np.sin(p["loc"]) * np.exp(-0.5 * p["scale"] ** 2) + p["loc"] ** 2

    values, grads = stats.sample_value_and_grads(baseline_from_earlier_site, 400, NUM, _jax(params))
    stats.check_unbiased(values, np.float64(exact(params)))
    stats.check_unbiased(grads, stats.numerical_grad(exact, params))


def test_a_good_baseline_reduces_variance_without_bias(stats):
    @pv.expectation
    def shifted(p):
        return 5.0 + jnp.sin(pv.sample("x", dist.Normal(p["loc"], 0.8), strategy=pv.reinforce))

    params = {"loc": 0.3}
    exact = stats.numerical_grad(lambda p: np.sin(p["loc"]) * np.exp(-0.32), params)
    variances = []
    for baseline in (0.0, 5.0):
        program = pv.with_strategies(shifted, {"x": pv.reinforce(baseline=baseline)})
        grads = stats.sample_grads(program, 500, NUM, _jax(params))
        stats.check_unbiased(grads, exact)
        variances.append(grads["loc"].var())
    assert variances[1] < variances[0] / 10


# ---------------------------------------------------------------------------------------------
# Parameters as pytrees, argnums, and keys.


@pv.expectation
def scaled_normal(p, c):
    x = pv.sample("x", dist.Normal(p["loc"], p["scale"]))
    return c * jnp.sin(x) + c**2 * x


def e_scaled_normal(p, c):
    return c * np.sin(p["loc"]) * np.exp(-0.5 * p["scale"] ** 2) + c**2 * p["loc"]


@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0)], ids=str)
def test_gradient_with_respect_to_pytrees_and_argnums(stats, argnums):
    p, c = {"loc": np.float64(0.3), "scale": np.float64(0.8)}, np.float64(1.7)
    exact = stats.numerical_grad(lambda args: e_scaled_normal(*args), (p, c))
    exact = exact[argnums] if isinstance(argnums, int) else tuple(exact[i] for i in argnums)
    grads = stats.sample_grads(scaled_normal, 600, NUM, _jax(p), _jax(c), argnums=argnums)
    stats.check_unbiased(grads, exact)


def test_same_key_gives_the_same_estimate_and_different_keys_differ():
    program = pv.with_strategies(bernoulli_then_normal, {"b": pv.mvd, "x": pv.reinforce})
    params = _jax({"logit": 0.4, "loc": 0.3, "scale": 0.9})
    first = program.value_and_grad(jax.random.key(7), params)
    again = program.value_and_grad(jax.random.key(7), params)
    other = program.value_and_grad(jax.random.key(8), params)
    for a, b, c in zip(
        jax.tree.leaves(first), jax.tree.leaves(again), jax.tree.leaves(other), strict=True
    ):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    np.testing.assert_array_equal(program.estimate(jax.random.key(7), params), first[0])


# ---------------------------------------------------------------------------------------------
# The statistical check itself can fail.


@dataclasses.dataclass(frozen=True)
class SelfBaseline(pv.Strategy):
    """REINFORCE whose baseline is the draw itself: biased, since E[x ∇log p(x)] ≠ 0."""

    name = "self_baseline"

    def local(self, key, d, tangent):
        x = jax.lax.stop_gradient(d.sample(key))
        _, score = jax.jvp(lambda q: q.log_prob(x), (d,), (tangent,))
        return pv.Local(x, None, score, x)


def test_the_check_rejects_a_biased_estimator(stats):
    problem = PROBLEMS["normal"]
    program = pv.with_strategies(problem.program, {"x": SelfBaseline()})
    grads = stats.sample_grads(program, 700, NUM, _jax(problem.params))
    with pytest.raises(AssertionError, match="differs from exact"):
        stats.check_unbiased(grads, _exact_grad(stats, problem))


def test_the_check_rejects_an_estimator_without_variance(stats):
    problem = PROBLEMS["bernoulli_probs"]
    program = pv.with_strategies(problem.program, {"x": pv.enum})
    grads = stats.sample_grads(program, 800, 100, _jax(problem.params))
    with pytest.raises(AssertionError, match="no variance"):
        stats.check_unbiased(grads, _exact_grad(stats, problem))
