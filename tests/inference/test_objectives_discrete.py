"""The objectives on a model with one three-valued latent, against exact enumeration.

The guide's choice is drawn with REINFORCE (the default for a Categorical), so every estimator
here has real variance. With K particles there are only 3**K particle sets, so the expectation
of each objective, and its gradient, is a finite sum: the estimates' means must match it within
four standard errors.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

K = 3
X = 0.7
THETA = {"logits": jnp.array([0.2, -0.4, 0.1]), "mu": jnp.array([-1.0, 0.5, 2.0])}
PHI = jnp.array([0.3, -0.2, 0.5])


@pv.gen
def model(theta):
    z = pv.sample("z", dist.Categorical(logits=theta["logits"]))
    pv.sample("x", dist.Normal(theta["mu"][z], 1.0))


@pv.gen
def guide(phi):
    pv.sample("z", dist.Categorical(logits=phi))


def program(objective, *extra):
    """The objective as a program of (theta, phi) for the observation X."""
    return pv.expectation(
        lambda theta, phi: objective(
            model, guide, {"x": X}, *extra, model_args=(theta,), guide_args=(phi,)
        )
    )


# -- exact answers by enumeration -----------------------------------------------------------------


def log_joint(theta):
    """log p(x = X, z) for z = 0, 1, 2."""
    return jax.nn.log_softmax(theta["logits"]) + dist.Normal(theta["mu"], 1.0).log_prob(X)


def expectation(f, theta, phi, num=K):
    """E[f(log w, log q, log p)] over `num` independent particles z_k ~ q, summed exactly."""
    zs = jnp.array(list(itertools.product(range(3), repeat=num)))
    log_q = jax.nn.log_softmax(phi)[zs]
    log_p = log_joint(theta)[zs]
    prob = jnp.exp(jnp.sum(log_q, 1))
    return jnp.sum(prob * jax.vmap(f)(log_p - log_q, log_q, log_p))


def log_mean_exp(a):
    return jax.nn.logsumexp(a) - math.log(a.shape[0])


def iwae_bound(theta, phi, num=K):
    return expectation(lambda lw, lq, lp: log_mean_exp(lw), theta, phi, num)


def renyi_bound(theta, phi, alpha):
    return expectation(lambda lw, lq, lp: log_mean_exp((1 - alpha) * lw) / (1 - alpha), theta, phi)


def wake_q_value(theta, phi):
    return expectation(lambda lw, lq, lp: jnp.sum(jax.nn.softmax(lw) * lq), theta, phi)


def wake_q_gradient(theta, phi):
    """E[sum_k w~_k grad log q(z_k)]: only log q(z_k) is differentiated, at fixed draws."""
    fixed_q = jax.lax.stop_gradient(jax.nn.log_softmax(phi))
    zs = jnp.array(list(itertools.product(range(3), repeat=K)))
    log_w = log_joint(theta)[zs] - fixed_q[zs]
    prob = jnp.exp(jnp.sum(fixed_q[zs], 1))

    def surrogate(phi):
        return jnp.sum(prob[:, None] * jax.nn.softmax(log_w, 1) * jax.nn.log_softmax(phi)[zs])

    return jax.grad(surrogate)(phi)


def forward_kl_value(theta, phi):
    """E[log p(x, z_j) - log(mean w) - log q(z_j)] with j resampled in proportion to w."""

    def f(lw, lq, lp):
        return jnp.sum(jax.nn.softmax(lw) * (lp - log_mean_exp(lw) - lq))

    return expectation(f, theta, phi)


def zeros_like_theta():
    return jax.tree.map(jnp.zeros_like, THETA)


# -- statistics -----------------------------------------------------------------------------------


def draws(fn, seed, num):
    keys = jax.random.split(jax.random.key(seed), num)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.jit(jax.vmap(fn))(keys))


def check_unbiased(samples, exact):
    for path, leaf, target in zip(
        jax.tree_util.tree_leaves_with_path(samples), jax.tree.leaves(samples),
        jax.tree.leaves(exact), strict=True,
    ):
        target = np.asarray(target, np.float64)
        sem = leaf.std(0, ddof=1) / np.sqrt(leaf.shape[0])
        assert np.all(sem > 1e-5), f"{path[0]}: the estimates do not vary, so the test has no power"
        z = (leaf.mean(0) - target) / sem
        assert np.all(np.abs(z) < 4.0), f"{path[0]}: mean {leaf.mean(0)} vs exact {target}: z={z}"


def gradients(prog, seed, num=20_000):
    return draws(lambda k: prog.grad(k, THETA, PHI, argnums=(0, 1)), seed, num)


# -- values ---------------------------------------------------------------------------------------

VALUES = {
    "elbo": (lambda: program(pv.elbo), lambda: iwae_bound(THETA, PHI, 1)),
    "iwae": (lambda: program(pv.iwae, K), lambda: iwae_bound(THETA, PHI)),
    "vimco": (lambda: program(pv.vimco, K), lambda: iwae_bound(THETA, PHI)),
    "renyi_half": (lambda: program(pv.renyi, K, 0.5), lambda: renyi_bound(THETA, PHI, 0.5)),
    "renyi_negative": (lambda: program(pv.renyi, K, -1.0), lambda: renyi_bound(THETA, PHI, -1.0)),
    "renyi_two": (lambda: program(pv.renyi, K, 2.0), lambda: renyi_bound(THETA, PHI, 2.0)),
    "wake_p": (lambda: program(pv.wake_p, K), lambda: iwae_bound(THETA, PHI)),
    "wake_q": (lambda: program(pv.wake_q, K), lambda: wake_q_value(THETA, PHI)),
    "rws": (lambda: program(pv.rws, K), lambda: iwae_bound(THETA, PHI)),
    "forward_kl": (lambda: program(pv.forward_kl, K), lambda: forward_kl_value(THETA, PHI)),
}


@pytest.mark.parametrize("name", list(VALUES))
def test_the_estimate_is_unbiased_for_the_enumerated_expectation(name):
    make, exact = VALUES[name]
    prog = make()
    check_unbiased(draws(lambda k: prog.estimate(k, THETA, PHI), 0, 20_000), exact())


def test_the_enumerated_bounds_are_ordered_as_the_theory_says():
    """A check of the exact answers themselves: ELBO < IWAE-2 < IWAE-3 < log p(x), Renyi
    decreasing in alpha, and the forward-KL estimate non-negative."""
    log_px = jax.nn.logsumexp(log_joint(THETA))
    bounds = [iwae_bound(THETA, PHI, n) for n in (1, 2, 3)]
    assert bounds[0] < bounds[1] < bounds[2] < log_px
    renyis = [renyi_bound(THETA, PHI, a) for a in (-1.0, 0.5, 2.0)]
    assert renyis[0] > bounds[2] > renyis[1] > bounds[0] > renyis[2]
    assert forward_kl_value(THETA, PHI) > 0


# -- gradients ------------------------------------------------------------------------------------


def test_elbo_gradient_is_unbiased():
    exact = jax.grad(iwae_bound, argnums=(0, 1))(THETA, PHI, 1)
    check_unbiased(gradients(program(pv.elbo), 1), exact)


@pytest.mark.parametrize("objective", [pv.iwae, pv.vimco], ids=lambda f: f.__name__)
def test_iwae_and_vimco_gradients_are_unbiased_for_the_iwae_bound(objective):
    exact = jax.grad(iwae_bound, argnums=(0, 1))(THETA, PHI)
    check_unbiased(gradients(program(objective, K), 2), exact)


@pytest.mark.parametrize("alpha", [0.5, -1.0, 2.0])
def test_renyi_gradient_is_unbiased(alpha):
    exact = jax.grad(renyi_bound, argnums=(0, 1))(THETA, PHI, alpha)
    check_unbiased(gradients(program(pv.renyi, K, alpha), 3), exact)


def test_wake_p_trains_the_model_only_with_the_iwae_gradient():
    exact_theta = jax.grad(iwae_bound)(THETA, PHI)
    d_theta, d_phi = gradients(program(pv.wake_p, K), 4)
    check_unbiased(d_theta, exact_theta)
    np.testing.assert_array_equal(d_phi, 0.0)


def test_wake_q_trains_the_guide_only_with_the_self_normalized_gradient():
    d_theta, d_phi = gradients(program(pv.wake_q, K), 5)
    check_unbiased(d_phi, wake_q_gradient(THETA, PHI))
    np.testing.assert_array_equal(jax.tree.leaves(d_theta), 0.0)


def test_rws_gives_wake_p_to_the_model_and_wake_q_to_the_guide():
    d_theta, d_phi = gradients(program(pv.rws, K), 6)
    check_unbiased(d_theta, jax.grad(iwae_bound)(THETA, PHI))
    check_unbiased(d_phi, wake_q_gradient(THETA, PHI))


def test_forward_kl_gradient_is_the_resampled_wake_q_gradient():
    d_theta, d_phi = gradients(program(pv.forward_kl, K), 7)
    check_unbiased(d_phi, -wake_q_gradient(THETA, PHI))
    np.testing.assert_array_equal(jax.tree.leaves(d_theta), 0.0)


# -- variance -------------------------------------------------------------------------------------


@pytest.mark.parametrize("num", [3, 10])
def test_vimco_has_lower_variance_than_reinforce_on_iwae(num):
    """Same expectation, measured variance of the guide's gradient: VIMCO's leave-one-out
    baselines remove most of REINFORCE's (measured ratios 48 at K = 3, 420 at K = 10)."""
    plain = draws(lambda k: program(pv.iwae, num).grad(k, THETA, PHI, argnums=1), 8, 4000)
    loo = draws(lambda k: program(pv.vimco, num).grad(k, THETA, PHI, argnums=1), 8, 4000)
    ratio = plain.var(0).sum() / loo.var(0).sum()
    print(f"K={num}: var(REINFORCE IWAE) / var(VIMCO) = {ratio:.1f}")
    assert ratio > 10.0
