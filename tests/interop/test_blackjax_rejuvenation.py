"""Resample-move SIR (`pv.normalize(..., rejuvenate=kernel)`) against a conjugate Gaussian.

Model z ~ N(0, 1), x | z ~ N(z, 0.7^2), x = 1.5: the posterior is N(μ, v) with v = 1 / (1 +
1 / 0.49) and μ = 1.5 v / 0.49, and the evidence Z = N(1.5; 0, sqrt(1.49)). The proposal
N(-0.5, 1) is off, so SIR with few particles is visibly biased and rejuvenation has work to do.
Tolerances: |z| < 4 on standard errors of the fixed-seed Monte Carlo means.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

SIGMA, X = 0.7, 1.5
V = 1.0 / (1.0 + 1.0 / SIGMA**2)
MU = X * V / SIGMA**2
LOG_Z = float(dist.Normal(0.0, np.sqrt(1.0 + SIGMA**2)).log_prob(X))
OBS = {"x": X}


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, SIGMA))


@pv.gen
def off():
    pv.sample("z", dist.Normal(-0.5, 1.0))


@pv.gen
def posterior():
    pv.sample("z", dist.Normal(MU, np.sqrt(V)))


@pv.gen
def guide(m, s):
    pv.sample("z", dist.Normal(m, s))


def z_score(samples, exact):
    samples = np.asarray(samples, np.float64)
    return (samples.mean() - exact) / (samples.std() / np.sqrt(samples.size))


@dataclasses.dataclass(frozen=True)
class Shift:
    """A 'kernel' that does not leave the posterior invariant: the tests must catch it."""

    def move(self, key, log_density, position):
        return jax.tree.map(lambda x: x + 0.3, position), jnp.ones(())


def weighted_draws(kernel, where, n=20000, num_particles=3):
    """(Ẑ, z') for n draws of the rejuvenated family, outside or inside a program."""
    sir = pv.normalize(model, off, num_particles, observations=OBS, rejuvenate=kernel)
    keys = jax.random.split(jax.random.key(1), n)
    if where == "outside":
        def one(k):
            tr = sir.simulate(k)
            return jnp.exp(model.assess(pv.merge(tr.choices, OBS))[0] - tr.score), tr.choices["z"]
    else:
        @pv.expectation
        def draw():
            tr = pv.simulate(sir)
            log_joint, _ = pv.density(model, pv.merge(tr.choices, OBS))
            return jnp.stack([jnp.exp(log_joint - tr.score), tr.choices["z"]])

        def one(k):
            out = draw.estimate(k)
            return out[0], out[1]
    return jax.jit(jax.vmap(one))(keys)


@pytest.mark.parametrize("where", ["outside", "in program"])
def test_the_evidence_weighted_moved_draws_are_exact(where):
    # E[Ẑ h(z')] = Z E_π[h] for every h, and E[g(z') / p̂(z')] = ∫ g = 1 for a density g.
    z_hat, z = weighted_draws(pv.interop.blackjax.mala(0.2, num_steps=2), where)
    ratio = z_hat / np.exp(LOG_Z)
    assert abs(z_score(ratio, 1.0)) < 4
    assert abs(z_score(ratio * z, MU)) < 4
    assert abs(z_score(ratio * z**2, V + MU**2)) < 4
    log_joint = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, SIGMA).log_prob(X)
    g = jnp.exp(dist.Normal(0.5, 1.0).log_prob(z))
    assert abs(z_score(g * z_hat / jnp.exp(log_joint), 1.0)) < 4
    # The draws themselves are still biased towards the proposal (3 particles, 2 MALA steps):
    # rejuvenation moves them, the weights Ẑ correct what is left.
    assert z_score(z, MU) < -4


def test_the_check_catches_a_kernel_that_is_not_invariant():
    z_hat, z = weighted_draws(Shift(), "outside")
    assert abs(z_score(z_hat / np.exp(LOG_Z) * z, MU)) > 4


@pytest.mark.parametrize("kernel", [
    pv.interop.blackjax.mala(0.6, num_steps=3),
    pv.interop.blackjax.hmc(0.4, num_integration_steps=4, num_steps=2),
    pv.interop.blackjax.nuts(0.5, num_steps=2),
], ids=["mala", "hmc", "nuts"])
def test_forward_kl_value_and_gradient_are_exact_from_the_posterior(kernel):
    # Proposing from the posterior itself, SIR is exact (Ẑ = Z), so the rejuvenated family is
    # exact if and only if the kernel leaves the posterior invariant: the forward-KL estimate
    # then has mean KL(π ‖ q) and gradient E_π[-∇ log q(z)], in closed form.
    m, s = 0.2, 0.8

    @pv.expectation
    def objective(m, s):
        return pv.forward_kl(model, guide, OBS, 4, guide_args=(m, s), proposal=posterior,
                             proposal_args=(), rejuvenate=kernel)

    keys = jax.random.split(jax.random.key(2), 4000)
    values, (d_m, d_s) = jax.jit(jax.vmap(
        lambda k: objective.value_and_grad(k, m, s, argnums=(0, 1))))(keys)
    second = V + (MU - m) ** 2
    kl = np.log(s) - 0.5 * np.log(V) + second / (2 * s**2) - 0.5
    assert abs(z_score(values, kl)) < 4
    assert abs(z_score(d_m, -(MU - m) / s**2)) < 4
    assert abs(z_score(d_s, -(second / s**3 - 1 / s))) < 4
    assert float(jnp.std(d_m)) > 0.1  # real variance


@pytest.mark.parametrize("where", ["outside", "in program"])
def test_the_density_estimate_is_unbiased_for_the_rejuvenated_family(where):
    # With a reversible kernel, E[exp(log p̂(z))] = q_RSIR(z): integrated against h on a grid it
    # must reproduce the moments of the family's own draws (2 particles, 1 MALA step: q_RSIR
    # is neither q_SIR nor π, and both sides are Monte Carlo means with standard errors).
    kernel = pv.interop.blackjax.mala(0.3, num_steps=1)
    sir = pv.normalize(model, off, 2, observations=OBS, rejuvenate=kernel)
    grid = jnp.linspace(-4.0, 5.0, 91)
    per_point = 800
    keys = jax.random.split(jax.random.key(3), (grid.size, per_point))
    if where == "outside":
        def estimate(k, z):
            return jnp.exp(sir.estimate_log_density(k, {"z": z}))
    else:
        @pv.expectation
        def density(z):
            return jnp.exp(pv.density(sir, {"z": z})[0])

        estimate = density.estimate
    p_hat = jax.jit(jax.vmap(jax.vmap(estimate, (0, None)), (0, 0)))(keys, grid)
    mean, var = p_hat.mean(1), p_hat.var(1) / per_point
    weights = np.full(grid.size, float(grid[1] - grid[0]))
    weights[[0, -1]] /= 2  # the trapezoid rule

    draws = jax.jit(jax.vmap(lambda k: sir.simulate(k).choices["z"]))(
        jax.random.split(jax.random.key(4), 40000))
    for h, h_draws in [(jnp.ones_like(grid), None), (grid, draws), (grid**2, draws**2)]:
        integral = np.sum(weights * h * mean)
        se = np.sqrt(np.sum((weights * h) ** 2 * var))
        if h_draws is None:
            assert abs(integral - 1.0) < 4 * se
        else:
            se = np.hypot(se, float(h_draws.std()) / np.sqrt(h_draws.size))
            assert abs(integral - float(h_draws.mean())) < 4 * se
    # The family differs from the posterior by many standard errors: the check has teeth.
    assert abs(float(draws.mean()) - MU) > 10 * float(draws.std()) / np.sqrt(draws.size)


def test_a_move_is_a_constant_for_differentiation():
    # The family's ELBO is E[log Ẑ] with or without the move: the same estimate, the same
    # gradient for the same key (the moved draw cancels from log p(x, z') - log p̂(z')).
    @pv.gen
    def proposal(m):
        pv.sample("z", dist.Normal(m, 1.0))

    def elbo(kernel):
        sir = pv.normalize(model, proposal, 3, observations=OBS, rejuvenate=kernel)

        @pv.expectation
        def objective(m):
            tr = pv.simulate(sir, m)
            return pv.density(model, pv.merge(tr.choices, OBS))[0] - tr.score

        return objective

    kernel = pv.interop.blackjax.mala(0.3, num_steps=2)
    key = jax.random.key(5)
    (v_plain, g_plain), (v_moved, g_moved) = (elbo(k).value_and_grad(key, 0.1)
                                              for k in (None, kernel))
    np.testing.assert_allclose(v_moved, v_plain, rtol=1e-5)
    np.testing.assert_allclose(g_moved, g_plain, rtol=1e-4)


def test_errors_name_the_argument_and_the_fix():
    with pytest.raises(TypeError, match="rejuvenate=.*not an MCMC kernel.*mala"):
        pv.normalize(model, off, 3, observations=OBS, rejuvenate="mala")

    @pv.gen
    def coin():
        pv.sample("c", dist.Bernoulli(0.5))

    @pv.gen
    def flip():
        c = pv.sample("c", dist.Bernoulli(0.5))
        pv.sample("y", dist.Normal(c, 1.0))

    sir = pv.normalize(flip, coin, 3, observations={"y": 1.0},
                       rejuvenate=pv.interop.blackjax.mala(0.1))
    with pytest.raises(TypeError, match=r"\['c'\] has dtype int.*real-valued"):
        sir.simulate(jax.random.key(0))
    with pytest.raises(ValueError, match="step_size=0.0 must be positive"):
        pv.interop.blackjax.mala(0.0)
    with pytest.raises(ValueError, match="num_steps=0 must be an int >= 1"):
        pv.interop.blackjax.nuts(0.1, num_steps=0)


def test_a_missing_blackjax_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "blackjax", None)
    with pytest.raises(ImportError, match=r'pip install "progvi\[blackjax\]"'):
        pv.interop.blackjax.mala(0.1).move(jax.random.key(0), lambda x: -x @ x, jnp.ones(2))
