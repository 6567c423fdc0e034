"""A learned noise in pv.unnormalized.nll: trained by its own zero-valued term only."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv

MODEL = {"mu": jnp.array(1.0), "log_s": jnp.log(0.5)}


def log_f(x, p):
    return -0.5 * ((x - p["mu"]) / jnp.exp(p["log_s"])) ** 2


def noise_of(phi):
    return dist.Normal(phi["m"], jnp.exp(phi["log_s"]))


def program(noise_loss):
    @pv.expectation
    def nll(params, x):
        return pv.unnormalized.nll(log_f, x, noise_of(params["noise"]),
                                   model_args=(params["model"],),
                                   estimator=pv.compositional(0.1), noise_loss=noise_loss)

    return nll


PARAMS = {"model": MODEL, "noise": {"m": jnp.array(0.0), "log_s": jnp.log(2.0)}}
XS = 1.0 + 0.5 * jax.random.normal(jax.random.key(9), (64,))


@pytest.mark.parametrize("noise_loss", ["variance", "forward_kl"])
def test_the_noise_loss_adds_zero_and_leaves_the_models_gradient_unchanged(noise_loss):
    plain, learned = program(None), program(noise_loss)
    for seed in range(3):
        key = jax.random.key(seed)
        v0, g0 = plain.value_and_grad(key, PARAMS, XS)
        v1, g1 = learned.value_and_grad(key, PARAMS, XS)
        np.testing.assert_allclose(v1, v0, rtol=1e-6)  # the same draws: a zero-valued term
        for a, b in zip(jax.tree.leaves(g1["model"]), jax.tree.leaves(g0["model"]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        # Without a noise loss the noise is held fixed; with one it receives a gradient.
        assert all(float(g) == 0.0 for g in jax.tree.leaves(g0["noise"]))
        assert any(abs(float(g)) > 0.0 for g in jax.tree.leaves(g1["noise"]))


@pytest.mark.parametrize("noise_loss", ["variance", "forward_kl"])
def test_the_learned_noise_moves_to_the_model(noise_loss):
    # With the model fixed (its learning rate 0), both losses are minimized by q = p: the
    # variance of f/q is 0 there, and so is KL(p || q).
    optimizer = optax.multi_transform(
        {"model": optax.sgd(0.0), "noise": optax.adam(optax.cosine_decay_schedule(0.05, 1500))},
        {"model": "model", "noise": "noise"},
    )
    result = pv.fit(jax.random.key(0), program(noise_loss), PARAMS, optimizer,
                    direction="minimize", data=XS, batch_size=32, num_steps=1500,
                    progress=False)
    noise = result.params["noise"]
    # 64 noise draws per step; over seeds 0-2 the final m and scale were within 0.006 of 1.0
    # and 0.5 with either loss (from m = 0, scale 2).
    assert abs(float(noise["m"]) - 1.0) < 0.05
    assert abs(float(jnp.exp(noise["log_s"])) - 0.5) < 0.05


def test_a_noise_whose_density_is_only_estimated_is_refused():
    @pv.gen
    def joint(m):
        u = pv.sample("u", dist.Normal(m, 1.0))
        pv.sample("y", dist.Normal(u, 1.0))

    @pv.gen
    def reverse(choices, m):
        pv.sample("u", dist.Normal(choices["y"], 1.0))

    family = pv.marginal(joint, keep=["y"], proposal=reverse, num_particles=2)

    @pv.expectation
    def nll(p, x):
        return pv.unnormalized.nll(log_f, x, family(0.0), model_args=(p,),
                                   estimator=pv.plug_in(2))

    with pytest.raises(pv.ObjectiveError, match=r"Marginal family, whose density is only "
                                                r"estimated.*exact density"):
        nll.estimate(jax.random.key(0), MODEL, XS)


@pytest.mark.parametrize("bad", [None, 1, "big"])
def test_a_bad_noise_loss_or_sample_count_is_explained(bad):
    @pv.expectation
    def nll(p, x):
        return pv.unnormalized.nll(log_f, x, dist.Normal(0.0, 2.0), model_args=(p,),
                                   estimator=pv.plug_in(2), noise_loss="variance",
                                   noise_samples=bad)

    with pytest.raises(pv.ObjectiveError, match=r"noise_samples=.*at least 2"):
        nll.estimate(jax.random.key(0), MODEL, XS)

    @pv.expectation
    def wrong(p, x):
        return pv.unnormalized.nll(log_f, x, dist.Normal(0.0, 2.0), model_args=(p,),
                                   estimator=pv.plug_in(2), noise_loss="chi2")

    with pytest.raises(pv.ObjectiveError, match=r"noise_loss='chi2'.*\"variance\" or"):
        wrong.estimate(jax.random.key(0), MODEL, XS)
