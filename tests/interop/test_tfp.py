"""TFP-on-JAX distributions at `pv.sample`: every strategy that applies, tested like numpyro's.

Each statistical case is a program ``E[f(x, θ)]`` with ``x`` drawn from a ``tfd`` distribution at
one site and ``f`` nonlinear (depending on θ directly too, so that no estimator is exact), its
exact expectation in float64 (a closed form or a sum over the support), and the exact gradient by
a five-point central difference of it. The mean of many vmapped gradient estimates must match it
within four standard errors, and the estimates must vary. Where TFP's sampler draws what numpyro's
draws from the same key (Normal, Bernoulli, Categorical), the TFP program and the numpyro program
give the same estimate and gradient from the same key.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from scipy import special
from scipy.stats import binom, poisson
from tensorflow_probability.substrates import jax as tfp

import progvi as pv

tfd = tfp.distributions

NUM = 10_000
Z_MAX = 4.0
SUPPORT = np.arange(400.0)  # Poisson(2.5) and Geometric(0.3) have negligible mass beyond 400


def numerical_grad(fn, params, step=1e-3):
    """The gradient of a float64 function of a dict of parameters, by a five-point stencil."""
    grads = {}
    for name, value in params.items():
        value = np.asarray(value, np.float64)
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):

            def moved(delta, name=name, index=index):
                shifted = {k: np.array(v, np.float64) for k, v in params.items()}
                shifted[name][index] += delta
                return fn(shifted)

            grad[index] = (-moved(2 * step) + 8 * moved(step) - 8 * moved(-step)
                           + moved(-2 * step)) / (12 * step)
        grads[name] = grad
    return grads


def check_unbiased(samples, exact):
    for name, target in exact.items():
        draws = np.asarray(samples[name], np.float64)
        mean, std = draws.mean(0), draws.std(0, ddof=1)
        assert np.all(std > 1e-4 * (1.0 + np.abs(target))), f"{name}: estimates do not vary"
        z = (mean - target) / (std / np.sqrt(draws.shape[0]))
        assert np.all(np.abs(z) < Z_MAX), f"{name}: mean {mean} vs exact {target}: z = {z}"


def sample_grads(program, seed, num, params):
    keys = jax.random.split(jax.random.key(seed), num)
    grads = jax.jit(jax.vmap(lambda k: program.grad(k, params)))(keys)
    return jax.tree.map(lambda g: np.asarray(g, np.float64), grads)


def _jax(params):
    return {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}


def _program(site, objective, strategy=None):
    @pv.expectation
    def program(p):
        return objective(pv.sample("x", site(p), strategy=strategy), p, jnp)

    return program


# Objectives written once for an array namespace `xp` (jnp in the program, np in the exact sum).


def f_normal(x, p, xp):
    return xp.exp(0.7 * x) + xp.sin(x) + 0.5 * p["loc"] * x**2


def e_normal(p):
    m, s = p["loc"], p["scale"]
    moment = 0.5 * m * (m**2 + s**2)
    return np.exp(0.7 * m + 0.245 * s**2) + np.sin(m) * np.exp(-0.5 * s**2) + moment


def f_gamma(x, p, xp):
    return x**2 + xp.log(x) + p["rate"] * x


def e_gamma(p):
    a, b = p["concentration"], p["rate"]
    return a * (a + 1) / b**2 + special.digamma(a) - np.log(b) + a


def f_count(x, p, xp):
    theta = p.get("probs", p.get("logits", p.get("rate")))
    return xp.sin(1.3 * x + theta) + 1.0 / (1.0 + x) + 0.2 * theta * x


CAT_VALUES = np.array([0.5, -1.0, 2.0, 0.3])
CAT_MIX = np.array([1.0, -2.0, 0.5, 1.5])


def f_category(x, p, xp):
    value = xp.asarray(CAT_VALUES)[x.astype(int)]
    return xp.sin(3.0 * value) + value**2 + 0.3 * value * xp.sum(xp.asarray(CAT_MIX) * p["logits"])


def _softmax(v):
    e = np.exp(v - np.max(v))
    return e / e.sum()


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _expectation(pmf, objective, support):
    return lambda p: float(np.sum(pmf(support, p) * objective(support, p, np)))


PROBLEMS = {
    "normal": (
        lambda p: tfd.Normal(p["loc"], p["scale"]), f_normal, {"loc": 0.3, "scale": 0.8},
        e_normal,
    ),
    "gamma": (  # TFP draws Gamma with implicit reparameterization
        lambda p: tfd.Gamma(p["concentration"], p["rate"]), f_gamma,
        {"concentration": 2.5, "rate": 1.5}, e_gamma,
    ),
    "bernoulli": (
        lambda p: tfd.Bernoulli(logits=p["logits"]), f_count, {"logits": -0.4},
        _expectation(lambda k, p: np.where(k == 1, _sigmoid(p["logits"]),
                                           1 - _sigmoid(p["logits"])), f_count, np.arange(2.0)),
    ),
    "categorical": (
        lambda p: tfd.Categorical(logits=p["logits"]), f_category,
        {"logits": np.array([0.2, -0.4, 0.9, 0.1])},
        _expectation(lambda k, p: _softmax(p["logits"]), f_category, np.arange(4.0)),
    ),
    "binomial": (
        lambda p: tfd.Binomial(4.0, probs=p["probs"]), f_count, {"probs": 0.35},
        _expectation(lambda k, p: binom.pmf(k, 4, p["probs"]), f_count, np.arange(5.0)),
    ),
    "poisson": (
        lambda p: tfd.Poisson(rate=p["rate"]), f_count, {"rate": 2.5},
        _expectation(lambda k, p: poisson.pmf(k, p["rate"]), f_count, SUPPORT),
    ),
    "geometric": (
        lambda p: tfd.Geometric(probs=p["probs"]), f_count, {"probs": 0.3},
        _expectation(lambda k, p: p["probs"] * (1 - p["probs"]) ** k, f_count, SUPPORT),
    ),
}

STATISTICAL = [
    (pv.reparam, "normal"), (pv.reparam, "gamma"),
    (pv.reinforce, "normal"), (pv.reinforce, "poisson"), (pv.reinforce, "categorical"),
    (pv.leave_one_out(num_samples=3), "normal"), (pv.leave_one_out(num_samples=3), "bernoulli"),
    (pv.mvd, "normal"), (pv.mvd, "bernoulli"), (pv.mvd, "categorical"), (pv.mvd, "poisson"),
    (pv.mvd, "geometric"),
]


@pytest.mark.parametrize(("strategy", "name"), STATISTICAL,
                         ids=[f"{s.name}-{n}" for s, n in STATISTICAL])
def test_strategies_on_tfp_distributions_are_unbiased(strategy, name):
    site, objective, params, expectation = PROBLEMS[name]
    program = _program(site, objective, strategy)
    grads = sample_grads(program, 0, NUM, _jax(params))
    check_unbiased(grads, numerical_grad(expectation, params))


@pytest.mark.parametrize("strategy", [pv.enum, pv.enum_parallel], ids=["enum", "enum_parallel"])
@pytest.mark.parametrize("name", ["bernoulli", "categorical", "binomial"])
def test_enumeration_of_tfp_finite_supports_is_exact(strategy, name):
    site, objective, params, expectation = PROBLEMS[name]
    value, grad = _program(site, objective, strategy).value_and_grad(jax.random.key(1),
                                                                     _jax(params))
    np.testing.assert_allclose(value, expectation(params), rtol=2e-5, atol=2e-6)
    for key, exact in numerical_grad(expectation, params).items():
        np.testing.assert_allclose(grad[key], exact, rtol=2e-4, atol=2e-5)


SAME_DRAWS = {  # TFP's and numpyro's samplers draw the same values from the same key
    "normal": (lambda lib, p: lib.Normal(p["loc"], p["scale"]), f_normal,
               {"loc": 0.3, "scale": 0.8}),
    "bernoulli": (lambda lib, p: lib.Bernoulli(logits=p["logits"]), f_count, {"logits": -0.4}),
    "categorical": (lambda lib, p: (lib.Categorical if lib is tfd else lib.CategoricalLogits)(
        logits=p["logits"]), f_category, {"logits": np.array([0.2, -0.4, 0.9, 0.1])}),
}
SAME = [
    (pv.reparam, "normal"), (pv.reinforce, "normal"), (pv.mvd, "normal"),
    (pv.leave_one_out, "normal"), (pv.reinforce, "bernoulli"), (pv.mvd, "bernoulli"),
    (pv.enum, "bernoulli"), (pv.mvd, "categorical"), (pv.enum_parallel, "categorical"),
]


@pytest.mark.parametrize(("strategy", "name"), SAME, ids=[f"{s.name}-{n}" for s, n in SAME])
def test_tfp_and_numpyro_programs_agree_key_for_key(strategy, name):
    make, objective, params = SAME_DRAWS[name]
    params = _jax(params)
    programs = [_program(lambda p, lib=lib: make(lib, p), objective, strategy) for lib in (tfd, nd)]
    for seed in range(3):
        (v_tfp, g_tfp), (v_np, g_np) = [p.value_and_grad(jax.random.key(seed), params)
                                        for p in programs]
        np.testing.assert_allclose(v_tfp, v_np, rtol=1e-5, atol=1e-6)
        for key in params:
            np.testing.assert_allclose(g_tfp[key], g_np[key], rtol=1e-4, atol=1e-5)


def test_default_strategy_follows_tfp_reparameterization_type():
    @pv.expectation
    def program(rate, loc):
        count = pv.sample("count", tfd.Poisson(rate))  # not reparameterized: REINFORCE
        x = pv.sample("x", tfd.Normal(loc, 1.0))  # fully reparameterized: reparam
        return count * x

    grads = jax.jit(jax.vmap(lambda k: program.grad(k, 2.0, 0.5, argnums=(0, 1))))(
        jax.random.split(jax.random.key(3), NUM))
    draws = {"rate": np.asarray(grads[0]), "loc": np.asarray(grads[1])}
    check_unbiased(draws, {"rate": 0.5, "loc": 2.0})  # d/d(rate, loc) of rate * loc
    assert np.std(draws["loc"]) > 0.1  # loc's gradient is the count: random, not a constant


# Generative functions and objectives


def _model(lib):
    @pv.gen
    def model():
        z = pv.sample("z", lib.Normal(0.0, 1.0))
        pv.sample("x", lib.Normal(z, 0.5))

    return model


def _guide(lib):
    @pv.gen
    def guide(p):
        pv.sample("z", lib.Normal(p["m"], jnp.exp(p["log_s"])))

    return guide


def _elbo(lib, objective):
    model, guide = _model(lib), _guide(lib)

    @pv.expectation
    def loss(p):
        return objective(model, guide, {"x": 1.2}, guide_args=(p,))

    return loss


def e_elbo(p):
    """The ELBO of N(z; 0, 1) N(1.2; z, 0.5²) under q = N(m, s²), in closed form."""
    m, s = p["m"], np.exp(p["log_s"])
    log_prior = -0.5 * np.log(2 * np.pi) - 0.5 * (m**2 + s**2)
    log_lik = -0.5 * np.log(2 * np.pi * 0.25) - ((1.2 - m) ** 2 + s**2) / (2 * 0.25)
    return log_prior + log_lik + 0.5 * np.log(2 * np.pi * np.e * s**2)


PARAMS = {"m": 0.3, "log_s": -0.4}


def test_elbo_of_a_tfp_model_and_guide_is_unbiased_and_equals_numpyro_key_for_key():
    tfp_loss, np_loss = _elbo(tfd, pv.elbo), _elbo(nd, pv.elbo)
    params = _jax(PARAMS)
    for seed in range(3):
        key = jax.random.key(seed)
        (v1, g1), (v2, g2) = tfp_loss.value_and_grad(key, params), np_loss.value_and_grad(
            key, params)
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
        for k in params:
            np.testing.assert_allclose(g1[k], g2[k], rtol=1e-4, atol=1e-6)
    check_unbiased(sample_grads(tfp_loss, 4, NUM, params), numerical_grad(e_elbo, PARAMS))


@pytest.mark.parametrize("bound", [pv.iwae, pv.iwae_dreg], ids=["iwae", "iwae_dreg"])
def test_k_particle_bounds_with_a_tfp_guide_equal_numpyro_key_for_key(bound):
    def objective(model, guide, obs, guide_args):
        return bound(model, guide, obs, 4, guide_args=guide_args)

    tfp_loss, np_loss = _elbo(tfd, objective), _elbo(nd, objective)
    params = _jax(PARAMS)
    key = jax.random.key(5)
    (v1, g1), (v2, g2) = tfp_loss.value_and_grad(key, params), np_loss.value_and_grad(key, params)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-4, atol=1e-6)


def test_generative_function_interface_with_tfp_sites():
    model = _model(tfd)
    trace = model.simulate(jax.random.key(0))
    z, x = trace.choices["z"], trace.choices["x"]
    expected = tfd.Normal(0.0, 1.0).log_prob(z) + tfd.Normal(z, 0.5).log_prob(x)
    np.testing.assert_allclose(trace.score, expected, rtol=1e-6)
    log_density, _ = model.assess({"z": 0.1, "x": 1.2})
    np.testing.assert_allclose(log_density, tfd.Normal(0.0, 1.0).log_prob(0.1)
                               + tfd.Normal(0.1, 0.5).log_prob(1.2), rtol=1e-6)
    _, weight = model.generate(jax.random.key(1), {"x": 1.2})
    assert np.isfinite(weight)
    normal = pv.distribution(tfd.Normal)
    assert float(normal.assess(0.5, 0.0, 1.0)[0]) == pytest.approx(-0.5 * np.log(2 * np.pi) - 0.125)
    assert np.shape(normal.simulate(jax.random.key(0), jnp.zeros(3), 1.0).retval) == (3,)


def test_a_tfp_distribution_in_a_numpyro_model_through_the_adapter():
    import numpyro

    def model(y):
        mu = numpyro.sample("mu", pv.interop.tfp(tfd.Normal(0.0, 1.0)))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", pv.interop.tfp(tfd.Normal(mu, 1.0)), obs=y)

    log_density, _ = pv.interop.numpyro(model).assess({"mu": 0.5}, jnp.zeros(3))
    expected = nd.Normal(0.0, 1.0).log_prob(0.5) + 3 * nd.Normal(0.5, 1.0).log_prob(0.0)
    np.testing.assert_allclose(log_density, expected, rtol=1e-6)


def test_sample_shapes_and_batches():
    d = pv.interop.tfp(tfd.Normal(jnp.zeros(3), 1.0))
    assert d.batch_shape == (3,) and d.event_shape == ()
    assert d.sample(jax.random.key(0), (4, 2)).shape == (4, 2, 3)
    assert d.log_prob(jnp.zeros((5, 3))).shape == (5, 3)
    assert d.to_event(1).log_prob(jnp.zeros(3)).shape == ()
    assert d.expand((2, 3)).sample(jax.random.key(1)).shape == (2, 3)
    mvn = pv.interop.tfp(tfd.MultivariateNormalDiag(jnp.zeros((2, 3)), jnp.ones(3)))
    assert (mvn.batch_shape, mvn.event_shape) == ((2,), (3,))
    np.testing.assert_allclose(mvn.log_prob(jnp.zeros(3)),
                               jnp.full(2, -1.5 * np.log(2 * np.pi)), rtol=1e-6)


# Errors: each names the site and the fix.


def _run(site, strategy):
    @pv.expectation
    def program(p):
        return pv.sample("site", site(p), strategy=strategy) * 1.0

    return program.estimate(jax.random.key(0), 0.5)


@pytest.mark.parametrize(("site", "strategy", "match"), [
    (lambda p: tfd.Poisson(p), pv.reparam,
     r"sample site 'site': pv.reparam cannot be used with tfd.Poisson because it has no "
     r"reparameterized sampler"),
    (lambda p: tfd.Poisson(p), pv.enum,
     r"sample site 'site': pv.enum cannot be used with tfd.Poisson because its support is not "
     r"finite"),
    (lambda p: tfd.Gamma(p, 1.0), pv.mvd,
     r"sample site 'site': pv.mvd cannot be used with tfd.Gamma because progvi has no "
     r"weak-derivative"),
    (lambda p: tfd.Bernoulli(probs=jnp.full(3, p)), pv.enum,
     r"sample site 'site': pv.enum cannot be used with tfd.Bernoulli because it has batch "
     r"shape \(3,\)"),
], ids=["reparam-poisson", "enum-poisson", "mvd-gamma", "enum-batched"])
def test_strategy_errors_name_the_site_and_the_tfp_class(site, strategy, match):
    with pytest.raises(pv.StrategyError, match=match):
        _run(site, strategy)


def test_a_joint_distribution_at_a_site_is_an_error_naming_it():
    joint = tfd.JointDistributionSequential([tfd.Normal(0.0, 1.0), tfd.Normal(0.0, 1.0)])
    with pytest.raises(pv.interop.TFPError, match=r"sample site 'site': .*structure of values"):
        _run(lambda p: joint, None)


def test_wrong_choice_names_the_tfp_class():
    with pytest.raises(pv.ChoiceError, match=r"'z'.*tfd.Normal there draws values of shape"):
        _guide(tfd).assess({"z": jnp.zeros(2)}, _jax(PARAMS))


def test_missing_tfp_names_the_extra(monkeypatch):
    for name in ("tensorflow_probability", "tensorflow_probability.substrates",
                 "tensorflow_probability.substrates.jax"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(pv.interop.TFPError, match=r'pip install "progvi\[tfp\]"'):
        pv.interop.tfp(object())


def test_tfp_sites_inside_a_vmap_combinator_equal_numpyro_key_for_key():
    def programs(lib):
        @pv.gen
        def point(m, log_s):
            return pv.sample("z", lib.Normal(m, jnp.exp(log_s)))

        @pv.gen
        def prior(m):
            return pv.sample("z", lib.Normal(m, 1.0))

        guide, model = pv.vmap(point, in_axes=(0, None)), pv.vmap(prior, in_axes=(0,))

        @pv.expectation
        def loss(m, log_s):
            return pv.elbo(model, guide, {}, model_args=(jnp.zeros(3),),
                           guide_args=(m, log_s))

        return loss

    args = (jnp.array([0.1, -0.3, 0.5]), jnp.asarray(-0.2))
    (v1, g1), (v2, g2) = [p.value_and_grad(jax.random.key(2), *args, argnums=(0, 1))
                          for p in (programs(tfd), programs(nd))]
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
