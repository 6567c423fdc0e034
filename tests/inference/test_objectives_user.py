"""No objective is privileged: each, written by a user with public constructs only (`pv.simulate`,
`pv.density`, `pv.merge`, `pv.particles`, `pv.normalize`, `pv.marginal` and JAX), gives the
library's value and gradients exactly, from the same key.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

X = 1.5
K = 4
sg = jax.lax.stop_gradient


@pv.gen
def model(mu0):
    z = pv.sample("z", dist.Normal(mu0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def guide(phi):
    pv.sample("z", dist.Normal(phi["m"], jnp.exp(phi["log_s"])))


@pv.gen
def discrete_model(logits):
    z = pv.sample("z", dist.Categorical(logits=logits))
    pv.sample("x", dist.Normal(jnp.array([-1.0, 0.5, 2.0])[z], 1.0))


@pv.gen
def discrete_guide(phi):
    pv.sample("z", dist.Categorical(logits=phi["logits"]))


@pv.gen
def two_level(phi):
    u = pv.sample("u", dist.Normal(phi["m"], 0.8))
    pv.sample("z", dist.Normal(u, jnp.exp(phi["log_s"])))


@pv.gen
def reverse(kept, phi):
    pv.sample("u", dist.Normal(0.5 * kept["z"] + 0.1, 0.6))


HIERARCHICAL = pv.marginal(two_level, keep=["z"], proposal=reverse, num_particles=3)
OBS = {"x": X}


def log_weight(p, q, theta, phi):
    """What a user writes for one particle: log p(x, z) - log q(z) at z ~ q."""
    tr = pv.simulate(q, phi)
    log_p, _ = pv.density(p, pv.merge(tr.choices, OBS), theta)
    return log_p - tr.score


def user_elbo(p, q, theta, phi):
    return log_weight(p, q, theta, phi)


def user_elbo_stl(p, q, theta, phi):
    tr = pv.simulate(q, phi)
    log_p, _ = pv.density(p, pv.merge(tr.choices, OBS), theta)
    log_q, _ = pv.density(q, tr.choices, sg(phi))  # frozen guide: no score term
    return log_p - log_q


def user_iwae(p, q, theta, phi):
    log_w = pv.particles(log_weight, K, p, q, theta, phi)
    return jax.nn.logsumexp(log_w) - math.log(K)


def user_renyi(p, q, theta, phi, alpha=0.5):
    log_w = pv.particles(log_weight, K, p, q, theta, phi)
    return (jax.nn.logsumexp((1 - alpha) * log_w) - math.log(K)) / (1 - alpha)


def user_iwae_dreg(p, q, theta, phi):
    def particle():
        tr = pv.simulate(q, phi)
        choices = pv.merge(tr.choices, OBS)
        log_q, _ = pv.density(q, tr.choices, sg(phi))
        log_p, _ = pv.density(p, choices, theta)
        log_p_of_z, _ = pv.density(p, choices, sg(theta))
        return log_p - log_q, log_p_of_z - log_q

    log_w, log_w_of_z = pv.particles(particle, K)
    w = sg(jax.nn.softmax(log_w))
    surrogate = jnp.sum((w**2 - w) * (log_w_of_z - sg(log_w_of_z)))
    return jax.nn.logsumexp(log_w) - math.log(K) + surrogate


def user_vimco(p, q, theta, phi):
    def particle():
        tr = pv.simulate(q, phi)
        log_p, _ = pv.density(p, pv.merge(tr.choices, OBS), theta)
        log_q, _ = pv.density(q, sg(tr.choices), phi)
        return log_p - tr.score, log_q

    log_w, log_q = pv.particles(particle, K)
    bound = jax.nn.logsumexp(log_w) - math.log(K)
    mean_others = (jnp.sum(log_w) - log_w) / (K - 1)
    replaced = jnp.where(jnp.eye(K, dtype=bool), mean_others[:, None], log_w[None, :])
    baselines = jax.nn.logsumexp(replaced, axis=1) - math.log(K)
    return bound - jnp.sum(sg(baselines) * (log_q - sg(log_q)))


def wake_particles(p, q, theta, phi):
    def particle():
        tr = pv.simulate(q, sg(phi))
        log_p, _ = pv.density(p, pv.merge(tr.choices, OBS), theta)
        log_q, _ = pv.density(q, sg(tr.choices), phi)
        return log_p - tr.score, log_q

    return pv.particles(particle, K)


def user_wake_p(p, q, theta, phi):
    def particle():
        tr = pv.simulate(q, sg(phi))
        log_p, _ = pv.density(p, pv.merge(tr.choices, OBS), theta)
        return log_p - tr.score

    log_w = pv.particles(particle, K)
    return jax.nn.logsumexp(log_w) - math.log(K)


def user_wake_q(p, q, theta, phi):
    log_w, log_q = wake_particles(p, q, sg(theta), phi)
    return jnp.sum(sg(jax.nn.softmax(log_w)) * log_q)


def user_rws(p, q, theta, phi):
    log_w, log_q = wake_particles(p, q, theta, phi)
    wake_q = jnp.sum(sg(jax.nn.softmax(log_w)) * log_q)
    return jax.nn.logsumexp(log_w) - math.log(K) + wake_q - sg(wake_q)


def user_forward_kl(p, q, theta, phi):
    sir = pv.normalize(p, q, K, target_args=sg((theta,)), observations=OBS)
    tr = pv.simulate(sir, *sg((phi,)))
    log_q, _ = pv.density(q, sg(tr.choices), phi)
    return tr.score - log_q


GAUSSIAN = (model, guide, jnp.array(0.3), {"m": jnp.array(0.4), "log_s": jnp.array(-0.2)})
DISCRETE = (discrete_model, discrete_guide, jnp.array([0.2, -0.4, 0.1]),
            {"logits": jnp.array([0.3, -0.2, 0.5])})
CASES = {
    "elbo": (pv.elbo, (), user_elbo, GAUSSIAN),
    "elbo_discrete": (pv.elbo, (), user_elbo, DISCRETE),
    "hvi": (pv.elbo, (), user_elbo, (model, HIERARCHICAL, *GAUSSIAN[2:])),
    "elbo_stl": (pv.elbo_stl, (), user_elbo_stl, GAUSSIAN),
    "iwae": (pv.iwae, (K,), user_iwae, GAUSSIAN),
    "iwae_discrete": (pv.iwae, (K,), user_iwae, DISCRETE),
    "diwhvi": (pv.iwae, (K,), user_iwae, (model, HIERARCHICAL, *GAUSSIAN[2:])),
    "iwae_dreg": (pv.iwae_dreg, (K,), user_iwae_dreg, GAUSSIAN),
    "renyi": (pv.renyi, (K, 0.5), user_renyi, GAUSSIAN),
    "vimco": (pv.vimco, (K,), user_vimco, DISCRETE),
    "wake_p": (pv.wake_p, (K,), user_wake_p, DISCRETE),
    "wake_q": (pv.wake_q, (K,), user_wake_q, DISCRETE),
    "rws": (pv.rws, (K,), user_rws, GAUSSIAN),
    "forward_kl": (pv.forward_kl, (K,), user_forward_kl, DISCRETE),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_user_written_objective_gives_the_library_gradients(name):
    objective, extra, user, (p, q, theta, phi) = CASES[name]
    library = pv.expectation(
        lambda theta, phi: objective(p, q, OBS, *extra, model_args=(theta,), guide_args=(phi,))
    )
    written = pv.expectation(lambda theta, phi: user(p, q, theta, phi))
    keys = jax.random.split(jax.random.key(0), 64)

    def both(key):
        return (library.value_and_grad(key, theta, phi, argnums=(0, 1)),
                written.value_and_grad(key, theta, phi, argnums=(0, 1)))

    ours, theirs = jax.jit(jax.vmap(both))(keys)
    leaves = jax.tree.leaves(ours)
    for a, b in zip(leaves, jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The comparison has power: the values and gradients vary from key to key.
    assert np.std(np.asarray(leaves[0])) > 1e-3
    assert any(np.std(np.asarray(g), 0).max() > 1e-3 for g in leaves[1:])
