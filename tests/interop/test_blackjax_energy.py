"""`pv.interop.blackjax.sample_energy` on a Gaussian energy with a known mean and covariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import progvi as pv

MEAN = jnp.array([1.0, -2.0])
SCALE = jnp.array([0.5, 1.5])
CHAINS = 4000


def log_f(x, mean, scale):  # N(mean, diag scale^2), unnormalized; a batch (n, 2) -> (n,)
    return -0.5 * jnp.sum(((x - mean) / scale) ** 2, axis=-1) + 7.0


def z_scores(x):
    """Per coordinate: z of the mean and of the mean of (x - mean)^2 against scale^2."""
    x = np.asarray(x, np.float64)
    sq = (x - np.asarray(MEAN)) ** 2
    n = x.shape[0]
    z_mean = (x.mean(0) - MEAN) / (x.std(0) / np.sqrt(n))
    z_var = (sq.mean(0) - SCALE**2) / (sq.std(0) / np.sqrt(n))
    return np.abs(np.concatenate([z_mean, z_var]))


@pytest.mark.parametrize("kernel", [
    pv.interop.blackjax.mala(0.15, num_steps=20),
    pv.interop.blackjax.hmc(0.3, num_integration_steps=5, num_steps=5),
], ids=["mala", "hmc"])
def test_chains_started_at_the_target_stay_there(kernel):
    # Started at exact draws, an invariant kernel's final positions are exact draws too: the
    # first two moments match within standard errors, with no burn-in to allow for.
    k_init, k_run = jax.random.split(jax.random.key(0))
    init = MEAN + SCALE * jax.random.normal(k_init, (CHAINS, 2))
    out = jax.jit(lambda k: pv.interop.blackjax.sample_energy(
        k, log_f, init, kernel=kernel, model_args=(MEAN, SCALE)))(k_run)
    assert out.positions.shape == (CHAINS, 2) and out.acceptance_rate.shape == (CHAINS,)
    assert np.all(z_scores(out.positions) < 4)
    assert 0.3 < float(out.acceptance_rate.mean()) < 1.0
    # The chains moved: they are not the starts.
    assert float(jnp.mean(jnp.abs(out.positions - init))) > 0.1


def test_chains_started_far_away_converge():
    # From x = (10, 10), 400 MALA steps of 0.15 contract the distance to the target by far more
    # than its scale (the slow coordinate, scale 1.5, needs ~ 50 steps per e-fold).
    out = jax.jit(lambda k: pv.interop.blackjax.sample_energy(
        k, log_f, jnp.full((CHAINS, 2), 10.0),
        kernel=pv.interop.blackjax.mala(0.15, num_steps=400), model_args=(MEAN, SCALE)))(
        jax.random.key(1))
    assert np.all(z_scores(out.positions) < 4)


def test_a_wrong_target_is_caught():
    # The same check fails for chains that sample a different variance.
    wide = jnp.array([0.6, 1.5])
    init = MEAN + wide * jax.random.normal(jax.random.key(2), (CHAINS, 2))
    out = pv.interop.blackjax.sample_energy(
        jax.random.key(3), log_f, init, kernel=pv.interop.blackjax.mala(0.15, num_steps=5),
        model_args=(MEAN, wide))
    assert np.any(z_scores(out.positions) > 4)


def test_errors_say_what_log_f_and_init_must_be():
    mala = pv.interop.blackjax.mala(0.1)
    with pytest.raises(ValueError, match=r"returned shape \(\).*\(n, \*event\) and returns"):
        pv.interop.blackjax.sample_energy(jax.random.key(0), lambda x: -jnp.sum(x**2),
                                          jnp.zeros((3, 2)), kernel=mala)
    with pytest.raises(TypeError, match="floating array of shape"):
        pv.interop.blackjax.sample_energy(jax.random.key(0), log_f, jnp.zeros((3, 2), int),
                                          kernel=mala, model_args=(MEAN, SCALE))
    with pytest.raises(TypeError, match="not an MCMC kernel"):
        pv.interop.blackjax.sample_energy(jax.random.key(0), log_f, jnp.zeros((3, 2)),
                                          kernel="mala", model_args=(MEAN, SCALE))


def test_nuts_reference_checks_its_arguments():
    with pytest.raises(ValueError, match="num_samples=0 must be an int >= 1"):
        pv.interop.blackjax.nuts_reference(jax.random.key(0), lambda z: -z @ z, jnp.zeros(2), 0)
    with pytest.raises(TypeError, match="dtype int.*real-valued"):
        pv.interop.blackjax.nuts_reference(jax.random.key(0), lambda z: -z @ z,
                                           jnp.zeros(2, int), 10)
