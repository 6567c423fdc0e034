"""Generative functions inside expectation programs: ELBO gradients through `pv.simulate` and
`pv.density` are unbiased (reparam and REINFORCE, plates and chains) against closed forms;
strategies reach nested addresses; vmapped estimates give per-datapoint estimators."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

LOG_2PI = math.log(2 * math.pi)


@pv.gen
def model(mu0):
    z = pv.sample("z", dist.Normal(mu0, 1.0))
    return pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def guide(phi):
    pv.sample("z", dist.Normal(phi["m"], jnp.exp(phi["log_s"])))


@pv.expectation
def elbo(phi):
    tr = pv.simulate(guide, phi)
    logp, _ = pv.density(model, {**tr.choices, "x": 3.0}, 0.0)
    return logp - tr.score


def gaussian_elbo(m, s, x, mu0=0.0):
    """ELBO of z ~ N(mu0, 1), x ~ N(z, 1) with q = N(m, s), in closed form."""
    return (
        -LOG_2PI
        - 0.5 * ((m - mu0) ** 2 + s**2)
        - 0.5 * ((x - m) ** 2 + s**2)
        + 0.5 * (LOG_2PI + 1)
        + jnp.log(s)
    )


PHI = {"m": 0.5, "log_s": -0.3}
EXACT = jax.grad(lambda p: gaussian_elbo(p["m"], jnp.exp(p["log_s"]), 3.0))(PHI)


@pytest.mark.parametrize("strategy", [pv.reparam, pv.reinforce], ids=lambda s: s.name)
def test_elbo_gradient_is_unbiased(stats, strategy):
    program = pv.with_strategies(elbo, {"z": strategy})
    values = stats.draws(lambda k: program.estimate(k, PHI), 0, 4000)
    stats.check_unbiased(values, gaussian_elbo(0.5, math.exp(-0.3), 3.0))
    grads = stats.draws(lambda k: program.grad(k, PHI), 1, 20_000)
    stats.check_unbiased(grads, EXACT)


@pv.gen
def coin_encoder(theta):
    return pv.sample("b", dist.Bernoulli(logits=theta))


@pv.gen
def coin_guide(theta):
    return pv.sample("enc", coin_encoder(theta))


@pv.gen
def coin_model():
    return pv.sample("enc", coin_encoder(0.4))


@pv.expectation
def coin_elbo(theta):
    tr = pv.simulate(coin_guide, theta)
    return pv.density(coin_model, tr.choices)[0] - tr.score


def coin_elbo_exact(theta):
    q, p = jax.nn.sigmoid(theta), jax.nn.sigmoid(0.4)
    return -(q * jnp.log(q / p) + (1 - q) * jnp.log((1 - q) / (1 - p)))


def test_strategy_patterns_reach_nested_addresses(stats):
    program = coin_elbo.trace(0.2)
    addresses = [e.params["address"] for e in program.jaxpr.eqns if "address" in e.params]
    assert addresses == ["enc/b"]
    exact = jax.grad(coin_elbo_exact)(0.2)
    # The default for a Bernoulli is REINFORCE: unbiased, random.
    stats.check_unbiased(stats.draws(lambda k: coin_elbo.grad(k, 0.2), 2, 20_000), exact)
    # Enumerating the only site through a glob on its nested address makes the gradient exact.
    enumerated = pv.with_strategies(coin_elbo, {"enc/*": pv.enum})
    grads = stats.draws(lambda k: enumerated.grad(k, 0.2), 3, 8)
    np.testing.assert_allclose(grads, np.full(8, exact), rtol=1e-5)


def test_deeply_nested_sites_are_addressed_by_their_path():
    @pv.gen
    def outer(theta):
        first = pv.sample("left", coin_guide(theta))
        return first + pv.sample("right", coin_guide(-theta))

    @pv.expectation
    def flips(theta):
        return pv.simulate(outer, theta).retval * 1.0

    eqns = flips.trace(0.3).jaxpr.eqns
    assert [e.params["address"] for e in eqns if "address" in e.params] == [
        "left/enc/b",
        "right/enc/b",
    ]
    # E[b_left + b_right] = sigmoid(theta) + sigmoid(-theta) = 1, whatever theta.
    exact = pv.with_strategies(flips, {"*/enc/b": pv.enum})
    value, grad = exact.value_and_grad(jax.random.key(0), 0.3)
    np.testing.assert_allclose([value, grad], [1.0, 0.0], atol=1e-6)


def local_elbo_exact(phi, xs):
    return jnp.sum(gaussian_elbo(phi["m"], jnp.exp(phi["log_s"]), xs))


XS = jnp.linspace(-2.0, 2.0, 8)
LOCAL = {"m": jnp.linspace(-1.0, 1.0, 8), "log_s": jnp.linspace(-0.5, 0.2, 8)}


@pv.expectation
def plate_elbo(phi, xs):
    tr = pv.simulate(pv.vmap(guide), phi)
    choices = {"z": tr.choices["z"], "x": xs}
    logp, _ = pv.density(pv.vmap(model), choices, jnp.zeros_like(xs))
    return logp - tr.score


@pytest.mark.parametrize("strategy", [pv.reparam, pv.reinforce], ids=lambda s: s.name)
def test_vmap_in_a_program_is_unbiased(stats, strategy):
    program = pv.with_strategies(plate_elbo, {"z": strategy})
    grads = stats.draws(lambda k: program.grad(k, LOCAL, XS), 4, 20_000)
    stats.check_unbiased(grads, jax.grad(local_elbo_exact)(LOCAL, XS))


def test_per_datapoint_estimates_have_per_datapoint_variance(stats):
    """REINFORCE on a whole plate multiplies each score by the sum over all datapoints; a vmap of
    per-datapoint estimates multiplies it by its own datapoint's term only."""
    whole = pv.with_strategies(plate_elbo, {"z": pv.reinforce})
    single = pv.with_strategies(elbo_at, {"z": pv.reinforce})

    def per_datapoint(key, phi):
        keys = jax.random.split(key, XS.shape[0])
        return jnp.sum(jax.vmap(single.estimate)(keys, phi, XS))

    exact = jax.grad(local_elbo_exact)(LOCAL, XS)
    batch_grads = stats.draws(lambda k: whole.grad(k, LOCAL, XS), 5, 20_000)
    split_grads = stats.draws(lambda k: jax.grad(per_datapoint, 1)(k, LOCAL), 6, 20_000)
    stats.check_unbiased(batch_grads, exact)
    stats.check_unbiased(split_grads, exact)
    ratio = batch_grads["m"].var(0) / split_grads["m"].var(0)
    assert np.all(ratio > 5.0), f"whole-plate / per-datapoint variance {ratio}"


@pv.expectation
def elbo_at(phi, x):
    tr = pv.simulate(guide, phi)
    logp, _ = pv.density(model, {**tr.choices, "x": x}, 0.0)
    return logp - tr.score


@pv.gen
def walk_step(z_prev, _):
    z = pv.sample("z", dist.Normal(z_prev, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))
    return z, None


@pv.gen
def walk_guide_step(carry, ms):
    pv.sample("z", dist.Normal(ms[0], jnp.exp(ms[1])))
    return carry, None


OBS = jnp.array([0.5, 1.5, 1.0, 2.5])
WALK = jnp.stack([jnp.array([0.2, 1.0, 1.1, 2.0]), jnp.array([-0.5, -0.2, 0.0, -0.4])], 1)


@pv.expectation
def walk_elbo(params):
    tr = pv.simulate(pv.scan(walk_guide_step), 0.0, params)
    logp, _ = pv.density(pv.scan(walk_step), {"z": tr.choices["z"], "x": OBS}, 0.0, OBS)
    return logp - tr.score


def walk_elbo_exact(params):
    m, s = params[:, 0], jnp.exp(params[:, 1])
    m_prev = jnp.concatenate([jnp.zeros(1), m[:-1]])
    s_prev = jnp.concatenate([jnp.zeros(1), s[:-1]])
    transitions = -0.5 * LOG_2PI - 0.5 * ((m - m_prev) ** 2 + s**2 + s_prev**2)
    emissions = -0.5 * LOG_2PI - 0.5 * ((OBS - m) ** 2 + s**2)
    entropy = 0.5 * (LOG_2PI + 1) + jnp.log(s)
    return jnp.sum(transitions + emissions + entropy)


@pytest.mark.parametrize("strategy", [pv.reparam, pv.reinforce], ids=lambda s: s.name)
def test_scan_in_a_program_is_unbiased(stats, strategy):
    program = pv.with_strategies(walk_elbo, {"z": strategy})
    values = stats.draws(lambda k: program.estimate(k, WALK), 7, 4000)
    stats.check_unbiased(values, walk_elbo_exact(WALK))
    grads = stats.draws(lambda k: program.grad(k, WALK), 8, 20_000)
    stats.check_unbiased(grads, jax.grad(walk_elbo_exact)(WALK))


def test_in_program_score_is_the_density_of_the_drawn_values():
    @pv.expectation
    def gap(phi):
        tr = pv.simulate(guide, phi)
        return tr.score - pv.density(guide, tr.choices, phi)[0]

    keys = jax.random.split(jax.random.key(9), 8)
    values = jax.vmap(lambda k: gap.value_and_grad(k, PHI))(keys)
    np.testing.assert_allclose(values[0], 0.0, atol=1e-5)
    jax.tree.map(lambda g: np.testing.assert_allclose(g, 0.0, atol=1e-4), values[1])


def test_a_call_sampled_directly_in_a_program_is_a_nested_simulate():
    import jax
    import numpy as np
    import numpyro.distributions as nd

    import progvi as pv

    @pv.gen
    def inner(m):
        return pv.sample("z", nd.Normal(m, 1.0)) ** 2

    @pv.expectation
    def program(m):
        return pv.sample("call", inner(m))

    keys = jax.random.split(jax.random.key(3), 20_000)
    grads = np.asarray(jax.jit(jax.vmap(lambda k: program.grad(k, 0.7)))(keys))
    assert abs(grads.mean() - 1.4) < 4 * grads.std() / np.sqrt(grads.size)  # d/dm (m^2 + 1)
    rf = pv.with_strategies(program, {"call/*": pv.reinforce})
    rf_grads = np.asarray(jax.jit(jax.vmap(lambda k: rf.grad(k, 0.7)))(keys))
    assert rf_grads.std() > 2 * grads.std()  # the override reached the nested site
    assert abs(rf_grads.mean() - 1.4) < 4 * rf_grads.std() / np.sqrt(rf_grads.size)


def test_plate_sites_that_ignore_the_mapped_arguments_draw_independently():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro.distributions as nd

    import progvi as pv

    @pv.gen
    def point(mu):
        return pv.sample("noise", nd.Normal(0.0, 1.0)) + mu

    @pv.expectation
    def nested(mus):
        return pv.simulate(pv.vmap(pv.vmap(point)), mus).retval.reshape(-1)

    keys = jax.random.split(jax.random.key(4), 4000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: nested.estimate(k, jnp.zeros((2, 3)))))(keys))
    corr = np.corrcoef(draws.T)
    assert np.all(np.abs(corr[~np.eye(6, dtype=bool)]) < 4 / np.sqrt(4000)), corr
    np.testing.assert_allclose(draws.std(0), 1.0, atol=0.06)
