"""Posterior export: samples of a guide's choices for numpyro's Predictive, and ArviZ data."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import Predictive

import progvi as pv


def model(x):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(w * x, 0.5))


def guide(params, x):
    numpyro.sample("w", dist.Normal(params["m"], jnp.exp(params["log_s"])))


X = jnp.array([1.0, -2.0, 0.5])
PARAMS = {"m": jnp.array(1.5), "log_s": jnp.array(-1.0)}


def test_samples_follow_the_guide_and_feed_predictive():
    samples = pv.interop.posterior_samples(jax.random.key(0), pv.interop.numpyro(guide), PARAMS,
                                           X, num_samples=4000)
    w = np.asarray(samples["w"])
    assert w.shape == (4000,)
    sem = np.exp(-1.0) / np.sqrt(4000)
    assert abs(w.mean() - 1.5) < 4 * sem
    assert abs(w.std() - np.exp(-1.0)) < 0.05 * np.exp(-1.0)
    predicted = Predictive(model, posterior_samples=samples)(jax.random.key(1), X)["y"]
    assert predicted.shape == (4000, 3)
    # E[y | w] = w x: the predictive mean follows the guide's draws.
    np.testing.assert_allclose(predicted.mean(0), w.mean() * X, atol=4 * 0.6 / np.sqrt(4000) + 0.02)
    data = pv.interop.to_arviz(samples, num_chains=4, observed_data={"y": X},
                               posterior_predictive={"y": predicted})
    assert data["posterior"]["w"].shape == (4, 1000)
    assert data["posterior_predictive"]["y"].shape == (4, 1000, 3)
    np.testing.assert_array_equal(np.asarray(data["observed_data"]["y"]), np.asarray(X))
    np.testing.assert_array_equal(np.asarray(data["posterior"]["w"]).reshape(-1), w)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="not a generative function.*pv.interop.numpyro"):
        pv.interop.posterior_samples(jax.random.key(0), guide, PARAMS, X)
    with pytest.raises(ValueError, match="num_chains=3 must be a positive int dividing the 10"):
        pv.interop.to_arviz({"w": np.zeros(10)}, num_chains=3)
