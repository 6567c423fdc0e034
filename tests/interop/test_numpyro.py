"""NumPyro models as generative functions: densities agree with NumPyro's own log_density,
generate's weight with NumPyro's per-site log probabilities, and ELBO gradients through the
adapter inside expectation programs are unbiased against a closed form."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import compute_log_probs, log_density

import progvi as pv

# Eight schools (Rubin 1981), as in NumPyro's examples: the centered parameterization.
J = 8
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


# Bayesian linear regression with a plate over datapoints, as in NumPyro's examples.
X = jax.random.normal(jax.random.key(1), (20, 3))
T = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3


def regression(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    with numpyro.plate("data", x.shape[0]):
        return numpyro.sample("y", dist.Normal(x @ w + b, sigma), obs=y)


CASES = [(eight_schools, (SIGMA, Y)), (regression, (X, T))]
IDS = ["eight_schools", "regression"]
KEYS = jax.random.split(jax.random.key(0), 8)


@pytest.mark.parametrize("model, args", CASES, ids=IDS)
def test_assess_and_simulate_match_numpyro_log_density(model, args):
    gf = pv.interop.numpyro(model)
    for key in KEYS:
        tr = gf.simulate(key, *args)
        expected, _ = log_density(model, args, {}, tr.choices)
        np.testing.assert_allclose(tr.score, expected, rtol=1e-5)
        logp, _ = gf.assess(tr.choices, *args)
        np.testing.assert_allclose(logp, expected, rtol=1e-5)


def test_latent_sites_are_the_choices_and_observed_ones_are_not():
    tr = pv.interop.numpyro(eight_schools).simulate(KEYS[0], SIGMA, Y)
    assert sorted(tr.choices) == ["mu", "tau", "theta"]
    assert tr.choices["theta"].shape == (J,)
    prior = pv.interop.numpyro(eight_schools).simulate(KEYS[0], SIGMA)
    assert sorted(prior.choices) == ["mu", "obs", "tau", "theta"]


@pytest.mark.parametrize("model, args", CASES, ids=IDS)
def test_generate_weight_sums_constrained_and_observed_sites(model, args):
    gf = pv.interop.numpyro(model)
    constrained = {"eight_schools": ["mu"], "regression": ["w", "sigma"]}[model.__name__]
    reference = gf.simulate(KEYS[1], *args).choices
    constraints = {name: reference[name] for name in constrained}
    tr, log_w = gf.generate(KEYS[2], constraints, *args)
    per_site, _ = compute_log_probs(model, args, {}, tr.choices)
    observed = {"eight_schools": "obs", "regression": "y"}[model.__name__]
    expected = sum(per_site[name] for name in [*constrained, observed])
    np.testing.assert_allclose(log_w, expected, rtol=1e-5)
    np.testing.assert_allclose(tr.score, sum(per_site.values()), rtol=1e-5)
    for name in constrained:
        np.testing.assert_array_equal(tr.choices[name], reference[name])


def test_scale_mask_and_factor_are_scored_like_numpyro():
    def weighted(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.handlers.scale(scale=2.5), numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        with numpyro.handlers.mask(mask=jnp.array([True, False, True])):
            numpyro.sample("z", dist.Normal(mu, 1.0).expand([3]))
        numpyro.factor("penalty", -(mu**2))

    gf = pv.interop.numpyro(weighted)
    tr = gf.simulate(KEYS[3], jnp.arange(4.0))
    expected, _ = log_density(weighted, (jnp.arange(4.0),), {}, tr.choices)
    np.testing.assert_allclose(tr.score, expected, rtol=1e-5)
    np.testing.assert_allclose(gf.assess(tr.choices, jnp.arange(4.0))[0], expected, rtol=1e-5)


def gaussian_guide():
    m = numpyro.param("m", 0.0)
    log_s = numpyro.param("log_s", 0.0)
    numpyro.sample("mu", dist.Normal(m, jnp.exp(log_s)))


def gaussian_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_params_are_explicit_arguments():
    guide = pv.interop.numpyro(gaussian_guide, params=True)
    params = {"m": 0.7, "log_s": -0.2}
    logp, _ = guide.assess({"mu": 0.1}, params)
    expected, _ = log_density(gaussian_guide, (), {}, {"mu": 0.1, **params})
    np.testing.assert_allclose(logp, expected, rtol=1e-6)


DATA = jnp.array([1.2, 0.4, 2.0, 1.1])
GUIDE = pv.interop.numpyro(gaussian_guide, params=True)
MODEL = pv.interop.numpyro(gaussian_model)


@pv.expectation
def elbo(params):
    tr = pv.simulate(GUIDE, params)
    logp, _ = pv.density(MODEL, tr.choices, DATA)
    return logp - tr.score


def elbo_exact(params):
    m, s = params["m"], jnp.exp(params["log_s"])
    log_2pi = math.log(2 * math.pi)
    prior = -0.5 * log_2pi - 0.5 * (m**2 + s**2)
    likelihood = jnp.sum(-0.5 * log_2pi - 0.5 * ((DATA - m) ** 2 + s**2))
    return prior + likelihood + 0.5 * (log_2pi + 1) + jnp.log(s)


def _check_unbiased(samples, exact):
    for name in exact:
        draws = np.asarray(samples[name], np.float64)
        sem = draws.std(ddof=1) / np.sqrt(draws.shape[0])
        assert sem > 1e-6, "the estimates do not vary"
        z = (draws.mean() - float(exact[name])) / sem
        assert abs(z) < 4.0, f"{name}: mean {draws.mean()} vs {exact[name]} (z = {z})"


@pytest.mark.parametrize("strategy", [pv.reparam, pv.reinforce], ids=lambda s: s.name)
def test_elbo_gradient_through_numpyro_models_is_unbiased(strategy):
    program = pv.with_strategies(elbo, {"mu": strategy})
    params = {"m": 0.3, "log_s": -0.4}
    keys = jax.random.split(jax.random.key(5), 20_000)
    grads = jax.jit(jax.vmap(lambda k: program.grad(k, params)))(keys)
    _check_unbiased(grads, jax.grad(elbo_exact)(params))


def test_numpyro_model_nested_in_a_gen_function():
    @pv.gen
    def joint(y):
        pv.sample("global", MODEL(y))
        return pv.sample("extra", dist.Normal(0.0, 1.0))

    tr = joint.simulate(KEYS[4], DATA)
    assert list(tr.choices["global"]) == ["mu"]
    logp, _ = joint.assess(tr.choices, DATA)
    expected = log_density(gaussian_model, (DATA,), {}, tr.choices["global"])[0]
    np.testing.assert_allclose(logp, expected + dist.Normal(0.0, 1.0).log_prob(tr.retval), 1e-5)

    @pv.expectation
    def score(y):
        return pv.simulate(joint, y).score

    eqns = score.trace(DATA).jaxpr.eqns
    assert [e.params["address"] for e in eqns if "address" in e.params] == ["global/mu", "extra"]


def test_errors_name_the_site_and_the_fix():
    with pytest.raises(pv.interop.ModelError, match=r"numpyro.param\('m', ...\).*params=True"):
        pv.interop.numpyro(gaussian_guide).simulate(KEYS[0])
    with pytest.raises(pv.interop.ModelError, match=r"has no 'log_s'.*\['m'\]"):
        GUIDE.simulate(KEYS[0], {"m": 0.0})
    with pytest.raises(pv.interop.ModelError, match=r"first argument must be a dict"):
        GUIDE.simulate(KEYS[0], 0.0)
    with pytest.raises(pv.ChoiceError, match=r"no value is given at 'tau'"):
        pv.interop.numpyro(eight_schools).assess({"mu": 0.0, "theta": jnp.zeros(J)}, SIGMA, Y)
    with pytest.raises(pv.ChoiceError, match=r"at 'obs', but eight_schools samples no such"):
        pv.interop.numpyro(eight_schools).generate(KEYS[0], {"obs": Y}, SIGMA, Y)
    with pytest.raises(pv.ChoiceError, match=r"at 'theta' has shape \(3,\).*shape \(8,\)"):
        pv.interop.numpyro(eight_schools).generate(KEYS[0], {"theta": jnp.zeros(3)}, SIGMA, Y)

    def subsampled(y):
        with numpyro.plate("data", 100, subsample_size=10):
            numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(pv.interop.ModelError, match=r"plate 'data'.*subsamples 10 of 100"):
        pv.interop.numpyro(subsampled).simulate(KEYS[0], jnp.zeros(10))

    def twice():
        numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(pv.AddressError, match=r"site 'a' is sampled twice in twice"):
        pv.interop.numpyro(twice).simulate(KEYS[0])


def test_sites_with_a_sample_shape():
    def replicated():
        loc = numpyro.sample("loc", dist.Normal(0.0, 1.0))
        numpyro.sample("draws", dist.Normal(loc, 1.0), sample_shape=(3,))

    gf = pv.interop.numpyro(replicated)
    tr = gf.simulate(KEYS[5])
    assert tr.choices["draws"].shape == (3,)
    expected, _ = log_density(replicated, (), {}, tr.choices)
    np.testing.assert_allclose(gf.assess(tr.choices)[0], expected, rtol=1e-5)

    @pv.expectation
    def score():
        tr = pv.simulate(gf)
        return tr.score - pv.density(gf, tr.choices)[0] + jnp.sum(tr.choices["draws"])

    # E[sum of 3 draws] = 3 E[loc] = 0 and the score gap is 0; the draws must vary.
    values = jax.vmap(score.estimate)(jax.random.split(KEYS[6], 2000))
    assert values.std() > 1.0
    assert abs(values.mean()) < 4 * values.std() / np.sqrt(2000)
