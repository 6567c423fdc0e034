"""`pv.plate`: per-datapoint estimators inside one program, next to global latents."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

XS = jnp.array([-0.4, 0.1, 0.3, 0.8, -1.0, 0.5, 0.2, -0.2])
CS = jnp.linspace(0.5, 1.5, 8)
N = 20_000


def grads(program, *args, n=N, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: program.grad(k, *args)))(keys), np.float64)


def assert_unbiased(samples, exact):
    mean, se = samples.mean(), samples.std() / np.sqrt(samples.size)
    assert se > 0
    assert abs(mean - exact) < 4 * se, (mean, se, exact)


# Global mu ~ N(m, 1), local z_i ~ N(mu + x_i, 1): E[Σ c_i exp(z_i)] = Σ c_i exp(m + x_i + 1).
def exact_grad(m):
    return float(jnp.sum(CS * jnp.exp(m + XS + 1.0)))


def term(mu, x, c):
    return c * jnp.exp(pv.sample("z", dist.Normal(mu + x, 1.0), strategy=pv.reinforce))


@pv.expectation
def with_plate(m):
    mu = pv.sample("mu", dist.Normal(m, 1.0))
    return pv.plate(lambda x, c: term(mu, x, c), XS, CS)


@pv.expectation
def without_plate(m):
    mu = pv.sample("mu", dist.Normal(m, 1.0))
    return jnp.sum(jax.vmap(lambda x, c: term(mu, x, c))(XS, CS))


def test_plate_gives_each_datapoint_its_own_reinforce_term():
    g_plate, g_whole = grads(with_plate, 0.2), grads(without_plate, 0.2)
    assert_unbiased(g_plate, exact_grad(0.2))
    assert_unbiased(g_whole, exact_grad(0.2))
    # Each z_i's score multiplies its own term instead of the sum of all eight.
    assert g_whole.var() > 3 * g_plate.var(), (g_whole.var(), g_plate.var())


def test_global_reinforce_site_sees_the_plate_in_its_continuation():
    rf = pv.with_strategies(with_plate, {"mu": pv.reinforce, "z": pv.reparam})
    assert_unbiased(grads(rf, 0.2, n=100_000), exact_grad(0.2))


def test_continuation_strategies_work_per_datapoint():
    ps = jnp.array([0.1, 0.5, 0.8])

    @pv.expectation
    def program(scale):
        def coin(p, i):
            b = pv.sample("b", dist.Bernoulli(probs=p), strategy=pv.enum)
            return jnp.where(b > 0, scale * i, scale**2)

        return pv.plate(coin, ps, jnp.arange(3.0))

    g = grads(program, 1.5, n=64)
    exact = float(jnp.sum(ps * jnp.arange(3.0) + (1 - ps) * 2 * 1.5))
    np.testing.assert_allclose(g, exact, rtol=1e-5)  # enumeration in every datapoint: exact


def test_datapoints_draw_independently():
    @pv.expectation
    def values():
        return pv.plate(lambda e: pv.sample("z", dist.Normal(0.0, 1.0)) * e, jnp.eye(4))

    keys = jax.random.split(jax.random.key(1), 4000)
    draws = np.asarray(jax.jit(jax.vmap(values.estimate))(keys))
    corr = np.corrcoef(draws.T)
    assert np.all(np.abs(corr[~np.eye(4, dtype=bool)]) < 4 / np.sqrt(4000))
    np.testing.assert_allclose(draws.std(0), 1.0, atol=0.05)


def test_plate_errors():
    with pytest.raises(pv.ProgramError, match=r"inside an expectation program"):
        pv.plate(lambda x: x, XS)

    @pv.expectation
    def mismatched():
        return pv.plate(lambda a, b: a + b, jnp.ones(3), jnp.ones(4))

    with pytest.raises(pv.ProgramError, match=r"share one number of datapoints.*\[3, 4\]"):
        mismatched.estimate(jax.random.key(0))


def test_pytree_arguments_and_shared_arguments():
    @pv.expectation
    def program(m):
        def term(data, scale):
            z = pv.sample("z", dist.Normal(m + data["x"], scale))
            return data["c"] * z**2

        return pv.plate(term, {"x": XS, "c": CS}, 0.5, in_axes=(0, None))

    # d/dm Σ c_i ((m + x_i)^2 + 0.25) = Σ 2 c_i (m + x_i)
    assert_unbiased(grads(program, 0.2), float(jnp.sum(2 * CS * (0.2 + XS))))


def test_constructs_without_sample_sites_are_still_interpreted():
    # A plate term or a log-expectation's inner program with no random choice is exact.
    @pv.expectation
    def inner(m):
        return -0.5 * m**2

    @pv.expectation
    def outer(m):
        log_z = pv.log_expectation(inner, m, estimator=pv.plug_in(3))
        return log_z + pv.plate(lambda x: x * m, jnp.arange(3.0))

    assert float(outer.estimate(jax.random.key(0), 2.0)) == -2.0 + 6.0
    assert float(outer.grad(jax.random.key(0), 2.0)) == -2.0 + 3.0
