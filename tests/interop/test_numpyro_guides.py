"""NumPyro params and autoguides through the adapter, against numpyro's own SVI: constrained
params optimized unconstrained, autoguides initialised as SVI.init initialises them, the ELBO
equal to Trace_ELBO's for the same params and draws, and fits that reach SVI's ELBO."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO, autoguide

import progvi as pv

# Logistic regression (NumPyro's examples) and eight schools (Rubin 1981), non-centered.
X = jax.random.normal(jax.random.key(1), (40, 3))
LABELS = (X @ jnp.array([1.0, -1.0, 0.5]) + 0.2 > 0).astype(jnp.float32)


def logistic(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", 8):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


GUIDES = [autoguide.AutoNormal, autoguide.AutoDiagonalNormal, autoguide.AutoMultivariateNormal,
          autoguide.AutoLowRankMultivariateNormal, autoguide.AutoDelta, autoguide.AutoIAFNormal]
MODELS = {"logistic": (logistic, (X, LABELS)), "eight_schools": (eight_schools, (SIGMA, Y))}


def _latent_names(model, args):
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(*args)
    return [n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]]


def test_constrained_params_are_optimized_unconstrained_as_svi_does():
    def guide():
        loc = numpyro.param("loc", 0.5)
        scale = numpyro.param("scale", 2.0, constraint=constraints.positive)
        probs = numpyro.param("probs", jnp.array([0.2, 0.3, 0.5]), constraint=constraints.simplex)
        numpyro.sample("mu", dist.Normal(loc, scale * probs[0]))

    gf = pv.interop.numpyro(guide, params=True)
    svi = SVI(lambda: None, guide, optax.adam(0.1), Trace_ELBO())
    state = svi.init(jax.random.key(0))
    reference = svi.optim.get_params(state.optim_state)  # SVI's unconstrained values
    params = gf.init_params(jax.random.key(0))
    assert sorted(params) == sorted(reference)
    for name in reference:
        np.testing.assert_allclose(params[name], reference[name], rtol=1e-6)
    assert params["probs"].shape == (2,)  # the simplex's unconstrained space
    constrained = gf.constrained_params(params)
    for name, value in svi.get_params(state).items():
        np.testing.assert_allclose(constrained[name], value, rtol=1e-6)
    # The density reads the params through the transforms: scale = exp(u), probs = stick(u).
    moved = {**params, "scale": jnp.array(-1.0)}
    logq, _ = gf.assess({"mu": 0.3}, moved)
    scale = math.exp(-1.0) * float(constrained["probs"][0])
    np.testing.assert_allclose(logq, dist.Normal(0.5, scale).log_prob(0.3), rtol=1e-5)


def _fit_pair(model, guide_class, args, steps, learning_rate):
    """pv.fit and numpyro's SVI from the same initial params with the same optimizer."""
    key = jax.random.key(3)
    svi = SVI(model, guide_class(model), optax.adam(learning_rate), Trace_ELBO())
    svi_result = svi.run(jax.random.key(4), steps, *args, progress_bar=False)
    guide = pv.interop.numpyro(guide_class(model), params=True)
    target = pv.interop.numpyro(model)

    @pv.expectation
    def elbo(params):
        return pv.elbo(target, guide, {}, model_args=args, guide_args=(params, *args))

    params = guide.init_params(key, *args)
    result = pv.fit(jax.random.key(5), elbo, params, optax.adam(learning_rate),
                    direction="maximize", num_steps=steps, progress=False)
    return svi, svi_result.params, guide.constrained_params(result.params, *args)


CASES = [(g, "logistic") for g in GUIDES] + [(autoguide.AutoNormal, "eight_schools")]


@pytest.mark.parametrize("guide_class, name", CASES,
                         ids=[f"{g.__name__}-{n}" for g, n in CASES])
def test_autoguide_elbo_equals_trace_elbo_for_the_same_params_and_draws(guide_class, name):
    model, args = MODELS[name]
    key = jax.random.key(7)
    svi = SVI(model, guide_class(model), optax.adam(0.01), Trace_ELBO())
    state = svi.init(key, *args)
    guide = pv.interop.numpyro(guide_class(model), params=True)
    params = guide.init_params(key, *args)  # no seed handler on the user's side
    reference = svi.optim.get_params(state.optim_state)
    assert sorted(params) == sorted(reference)
    for ours, theirs in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    # Move the params off their initial values, the same move for both.
    params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                          params)
    constrained = guide.constrained_params(params, *args)
    for ours, theirs in zip(jax.tree.leaves(constrained),
                            jax.tree.leaves(svi.constrain_fn(params)), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    target = pv.interop.numpyro(model)
    latents = _latent_names(model, args)
    for seed in range(2):
        draws = handlers.trace(handlers.seed(handlers.substitute(svi.guide, data=constrained),
                                             seed)).get_trace(*args)
        draws = {n: s["value"] for n, s in draws.items() if s["type"] == "sample"}
        log_q, _ = guide.assess(draws, params, *args)
        log_p, _ = target.assess({n: draws[n] for n in latents}, *args)
        loss = Trace_ELBO().loss(jax.random.key(0), constrained, model,
                                 handlers.substitute(svi.guide, data=draws), *args)
        np.testing.assert_allclose(log_p - log_q, -loss, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("guide_class", [autoguide.AutoNormal, autoguide.AutoMultivariateNormal,
                                         autoguide.AutoIAFNormal],
                         ids=lambda g: g.__name__)
def test_fitted_autoguide_reaches_the_elbo_of_svi(guide_class):
    model, args = MODELS["logistic"]
    svi, theirs, ours = _fit_pair(model, guide_class, args, steps=300, learning_rate=0.02)
    many = Trace_ELBO(num_particles=2000)
    evaluate = jax.jit(lambda p: -many.loss(jax.random.key(8), p, model, svi.guide, *args))
    elbo_svi, elbo_pv = evaluate(theirs), evaluate(ours)
    initial = evaluate(svi.get_params(svi.init(jax.random.key(3), *args)))
    assert elbo_svi > initial + 1.0, "the fit must move the ELBO for the test to mean anything"
    assert abs(elbo_pv - elbo_svi) < 0.1 * (elbo_svi - initial), (elbo_pv, elbo_svi, initial)


def test_deterministic_sites_are_recorded_and_not_scored():
    target = pv.interop.numpyro(eight_schools)
    tr = target.simulate(jax.random.key(0), SIGMA, Y)
    assert sorted(tr.choices) == ["eta", "mu", "tau", "theta"]
    np.testing.assert_allclose(tr.choices["theta"],
                               tr.choices["mu"] + tr.choices["tau"] * tr.choices["eta"], rtol=1e-6)
    given = {n: tr.choices[n] for n in ["eta", "mu", "tau"]}
    expected, _ = numpyro.infer.util.log_density(eight_schools, (SIGMA, Y), {}, given)
    np.testing.assert_allclose(target.assess(given, SIGMA, Y)[0], expected, rtol=1e-5)
    np.testing.assert_allclose(target.assess(tr.choices, SIGMA, Y)[0], expected, rtol=1e-5)
