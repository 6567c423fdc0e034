"""`pv.vmap` and `pv.scan` agree with the same model written as a Python loop."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.stats import norm

import progvi as pv


@pv.gen
def point(mu, scale):
    z = pv.sample("z", dist.Normal(mu, scale))
    count = pv.sample("count", dist.Poisson(jnp.exp(z / 4.0)))
    return z + count


@pv.gen
def step(z_prev, drift):
    z = pv.sample("z", dist.Normal(0.9 * z_prev + drift, 1.0))
    x = pv.sample("x", dist.Normal(z, 0.5))
    return z, x


MUS = jnp.array([0.0, 1.0, -2.0, 0.5])
DRIFTS = jnp.array([0.1, -0.3, 0.2, 0.0, 0.4])
KEY = jax.random.key(3)


def _slice(tree, i):
    return jax.tree.map(lambda v: v[i], tree)


def test_vmap_simulate_scores_like_a_loop_over_datapoints():
    plate = pv.vmap(point, in_axes=(0, None))
    tr = plate.simulate(KEY, MUS, 2.0)
    assert tr.choices["z"].shape == (4,) and tr.choices["count"].shape == (4,)
    loop = [point.assess(_slice(tr.choices, i), MUS[i], 2.0) for i in range(4)]
    np.testing.assert_allclose(tr.score, sum(s for s, _ in loop), rtol=1e-5)
    np.testing.assert_allclose(tr.retval, [r for _, r in loop], rtol=1e-6)
    assert len(set(np.asarray(tr.choices["z"]).tolist())) == 4, "each datapoint has its own key"


def test_vmap_assess_and_generate_match_the_loop():
    plate = pv.vmap(point, in_axes=(0, None))
    choices = {"z": jnp.array([0.1, 0.2, -0.3, 1.5]), "count": jnp.array([0, 3, 1, 2])}
    logp, _ = plate.assess(choices, MUS, 2.0)
    loop = sum(point.assess(_slice(choices, i), MUS[i], 2.0)[0] for i in range(4))
    np.testing.assert_allclose(logp, loop, rtol=1e-5)

    tr, log_w = plate.generate(KEY, {"count": choices["count"]}, MUS, 2.0)
    rates = jnp.exp(tr.choices["z"] / 4.0)
    expected = jnp.sum(dist.Poisson(rates).log_prob(choices["count"]))
    np.testing.assert_allclose(log_w, expected, rtol=1e-5)
    np.testing.assert_allclose(tr.score, plate.assess(tr.choices, MUS, 2.0)[0], rtol=1e-5)


def test_vmap_nested_in_a_gen_function_batches_its_choices():
    @pv.gen
    def dataset(mus):
        scale = pv.sample("scale", dist.Gamma(2.0, 2.0))
        return pv.sample("data", pv.vmap(point, in_axes=(0, None))(mus, scale))

    tr = dataset.simulate(KEY, MUS)
    assert tr.choices["data"]["z"].shape == (4,)
    scale = tr.choices["scale"]
    loop = sum(point.assess(_slice(tr.choices["data"], i), MUS[i], scale)[0] for i in range(4))
    expected = dist.Gamma(2.0, 2.0).log_prob(scale) + loop
    np.testing.assert_allclose(tr.score, expected, rtol=1e-5)


def _loop_assess(choices, init):
    """`pv.scan(step)` written as a Python loop of `step.assess`."""
    total, carry, ys = 0.0, init, []
    for t in range(len(DRIFTS)):
        logp, (carry, y) = step.assess(_slice(choices, t), carry, DRIFTS[t])
        total, ys = total + logp, ys + [y]
    return total, carry, jnp.stack(ys)


def test_scan_simulate_and_assess_match_the_loop():
    chain = pv.scan(step)
    tr = chain.simulate(KEY, 0.5, DRIFTS)
    assert tr.choices["z"].shape == (5,) and tr.choices["x"].shape == (5,)
    total, carry, ys = _loop_assess(tr.choices, 0.5)
    np.testing.assert_allclose(tr.score, total, rtol=1e-5)
    np.testing.assert_allclose(tr.retval[0], carry, rtol=1e-6)
    np.testing.assert_allclose(tr.retval[1], ys, rtol=1e-6)
    logp, (last, xs) = chain.assess(tr.choices, 0.5, DRIFTS)
    np.testing.assert_allclose(logp, total, rtol=1e-5)
    np.testing.assert_allclose(xs, tr.choices["x"], rtol=1e-6)


def test_scan_generate_weight_is_the_observation_density():
    observed = jnp.array([0.3, -0.1, 0.8, 1.2, 0.0])
    tr, log_w = pv.scan(step, length=5).generate(KEY, {"x": observed}, 0.5, DRIFTS)
    np.testing.assert_array_equal(tr.choices["x"], observed)
    np.testing.assert_allclose(
        log_w, jnp.sum(norm.logpdf(observed, tr.choices["z"], 0.5)), rtol=1e-5
    )
    np.testing.assert_allclose(tr.score, _loop_assess(tr.choices, 0.5)[0], rtol=1e-5)


def test_scan_without_xs_uses_length():
    @pv.gen
    def walk(z, _):
        z = pv.sample("z", dist.Normal(z, 1.0))
        return z, None

    tr = pv.scan(walk, length=6).simulate(KEY, 0.0)
    zs = tr.choices["z"]
    previous = jnp.concatenate([jnp.zeros(1), zs[:-1]])
    np.testing.assert_allclose(tr.score, jnp.sum(norm.logpdf(zs, previous, 1.0)), rtol=1e-5)
    assert tr.retval[0] == zs[-1]


def test_combinators_compose_scan_of_vmap():
    @pv.gen
    def layer(zs, _):
        zs = pv.sample("layer", pv.vmap(point, in_axes=(0, None))(zs, 1.0))
        return zs, None

    tr = pv.scan(layer, length=3).simulate(KEY, MUS)
    assert tr.choices["layer"]["z"].shape == (3, 4)
    logp, _ = pv.scan(layer, length=3).assess(tr.choices, MUS)
    np.testing.assert_allclose(logp, tr.score, rtol=1e-5)
