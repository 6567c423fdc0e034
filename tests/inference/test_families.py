"""Families built by inference: the density estimates of `pv.marginal` and `pv.normalize`.

Joint family: u ~ N(m, 1), z ~ N(u, 1), so the marginal of z is N(m, sqrt 2). Reverse proposal
r(u | z) = N((z + m) / 2, 0.9), not the exact conditional N((z + m) / 2, sqrt(1/2)), so every
estimate has real variance.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from jax.scipy.stats import norm

import progvi as pv

N = 20_000
M = 0.3


@pv.gen
def joint(m):
    u = pv.sample("u", dist.Normal(m, 1.0))
    pv.sample("z", dist.Normal(u, 1.0))


@pv.gen
def reverse(kept, m):
    pv.sample("u", dist.Normal((kept["z"] + m) / 2, 0.9))


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def wide(scale):
    pv.sample("z", dist.Normal(0.0, scale))


def estimates(program, *args, seed=0, n=N):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: program.estimate(k, *args)))(keys), np.float64)


def assert_mean(samples, exact):
    mean, se = samples.mean(), samples.std() / np.sqrt(samples.size)
    assert se > 0, "no variance: the test would be vacuous"
    assert abs(mean - exact) < 4 * se, f"mean {mean} ± {se}, exact {exact}"


@pytest.mark.parametrize("k", [1, 3])
def test_marginal_density_is_unbiased(k):
    family = pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=k)

    @pv.expectation
    def density_at(z):
        return jnp.exp(pv.density(family, {"z": z}, M)[0])

    for z in [-0.5, 1.2]:
        assert_mean(estimates(density_at, z), float(norm.pdf(z, M, np.sqrt(2))))


@pytest.mark.parametrize("k", [1, 2, 5])
def test_marginal_simulate_score_has_an_unbiased_reciprocal(k):
    # E_{z ~ q}[g(z) / q̂(z)] = ∫ g = 1 for a density g, iff E[1/q̂(z) | z] = 1/q(z).
    family = pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=k)

    @pv.expectation
    def weighted():
        tr = pv.simulate(family, M)
        return jnp.exp(norm.logpdf(tr.choices["z"], 1.0, 0.7) - tr.score)

    assert_mean(estimates(weighted, seed=k), 1.0)
    # The score is a bound: E[log q̂] >= log q, tighter as K grows.
    outside = jax.vmap(lambda key: family.simulate(key, M))(jax.random.split(jax.random.key(9), N))
    gap = np.asarray(outside.score - norm.logpdf(outside.choices["z"], M, np.sqrt(2)))
    assert gap.mean() > -4 * gap.std() / np.sqrt(N)
    outside_weighted = np.exp(norm.logpdf(outside.choices["z"], 1.0, 0.7) - outside.score)
    assert_mean(np.asarray(outside_weighted, np.float64), 1.0)


def test_marginal_bound_tightens_with_particles():
    gaps = []
    for k in [1, 4, 16]:
        family = pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=k)
        keys = jax.random.split(jax.random.key(k), N)
        tr = jax.vmap(lambda key, f=family: f.simulate(key, M))(keys)
        gaps.append(float(jnp.mean(tr.score - norm.logpdf(tr.choices["z"], M, np.sqrt(2)))))
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps


def test_hvi_elbo_gradient_is_unbiased_for_its_bound():
    # ELBO of the marginal family against the target N(z; 1, 1): the HVI bound. Its gradient in
    # m is checked against a finite difference of the bound computed by common-random-number MC.
    family = pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=2)

    @pv.expectation
    def hvi(m):
        tr = pv.simulate(family, m)
        return norm.logpdf(tr.choices["z"], 1.0, 1.0) - tr.score

    grads = np.asarray(
        jax.jit(jax.vmap(lambda key: hvi.grad(key, M)))(jax.random.split(jax.random.key(5), N)),
        np.float64,
    )

    def bound(m, n=400_000):
        tr = jax.vmap(lambda key: family.simulate(key, m))(jax.random.split(jax.random.key(6), n))
        return jnp.mean(norm.logpdf(tr.choices["z"], 1.0, 1.0) - tr.score)

    h = 0.05
    exact = float((bound(M + h) - bound(M - h)) / (2 * h))
    mean, se = grads.mean(), grads.std() / np.sqrt(grads.size)
    assert abs(mean - exact) < 4 * se + 0.01, (mean, se, exact)


def test_normalize_density_integrates_to_one():
    # E_{z ~ h}[p̂(z) / h(z)] = ∫ q_SIR = 1 iff the density estimate is unbiased.
    sir = pv.normalize(model, wide, num_particles=4, observations={"x": 1.5})

    @pv.expectation
    def ratio():
        z = pv.sample("probe", dist.Normal(0.5, 1.2))
        return jnp.exp(pv.density(sir, {"z": z}, 2.0)[0] - norm.logpdf(z, 0.5, 1.2))

    assert_mean(estimates(ratio), 1.0)


@pytest.mark.parametrize("k", [1, 4])
def test_normalize_simulate_score_has_an_unbiased_reciprocal(k):
    sir = pv.normalize(model, wide, num_particles=k, observations={"x": 1.5})

    @pv.expectation
    def weighted():
        tr = pv.simulate(sir, 2.0)
        return jnp.exp(norm.logpdf(tr.choices["z"], 0.5, 1.0) - tr.score)

    assert_mean(estimates(weighted, seed=k), 1.0)
    outside = jax.vmap(lambda key: sir.simulate(key, 2.0))(jax.random.split(jax.random.key(3), N))
    w = np.asarray(jnp.exp(norm.logpdf(outside.choices["z"], 0.5, 1.0) - outside.score))
    assert_mean(w.astype(np.float64), 1.0)


def test_normalize_approaches_the_posterior():
    # Posterior of z given x = 1.5: N(0.75, sqrt(1/2)).
    sir = pv.normalize(model, wide, num_particles=200, observations={"x": 1.5})
    zs = jax.vmap(lambda key: sir.simulate(key, 2.0).choices["z"])(
        jax.random.split(jax.random.key(1), 4000)
    )
    assert abs(float(zs.mean()) - 0.75) < 0.05 and abs(float(zs.std()) - np.sqrt(0.5)) < 0.05


def test_estimate_log_density_outside_programs():
    family = pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=3)
    dens = jax.vmap(lambda key: jnp.exp(family.estimate_log_density(key, {"z": 0.4}, M)))(
        jax.random.split(jax.random.key(2), N)
    )
    assert_mean(np.asarray(dens, np.float64), float(norm.pdf(0.4, M, np.sqrt(2))))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"num_particles=0 must be an int >= 1"):
        pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=0)
    with pytest.raises(TypeError, match=r"keep='z' must be a list"):
        pv.marginal(joint, keep="z", proposal=reverse)
    family = pv.marginal(joint, keep=["w"], proposal=reverse)
    with pytest.raises(pv.ChoiceError, match=r"keeps 'w'.*samples no such address"):
        family.simulate(jax.random.key(0), M)
    good = pv.marginal(joint, keep=["z"], proposal=reverse)
    with pytest.raises(TypeError, match=r"no exact density.*pv\.density"):
        good.assess({"z": 0.0}, M)

    @pv.expectation
    def wrong_choices():
        return pv.density(good, {"z": 0.0, "u": 1.0}, M)[0]

    with pytest.raises(pv.ChoiceError, match=r"exactly the choices \['z'\].*'u'"):
        wrong_choices.estimate(jax.random.key(0))
    with pytest.raises(ValueError, match=r"num_particles=0"):
        pv.normalize(model, wide, 0)
