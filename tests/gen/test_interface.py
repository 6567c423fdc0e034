"""The generative function interface: simulate, assess and generate agree with each other and
with log densities written out by hand; traces cross jit and vmap; choice maps merge."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from jax.scipy.stats import norm

import progvi as pv


@pv.gen
def model(mu0):
    z = pv.sample("z", dist.Normal(mu0, 1.0))
    return pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def encoder(x, w):
    h = pv.sample("h", dist.Normal(w * x, 1.0).expand((3,)).to_event(1))
    flip = pv.sample("flip", dist.Bernoulli(logits=jnp.sum(h)))
    return h, flip


@pv.gen
def hierarchical(x):
    h, flip = pv.sample("enc", encoder(x, 0.5))
    return pv.sample("y", dist.Normal(jnp.sum(h) + flip, 2.0))


def hand_log_joint(choices, x):
    """log p of `hierarchical`'s choices, written without progvi."""
    h, flip, y = choices["enc"]["h"], choices["enc"]["flip"], choices["y"]
    logit = jnp.sum(h)
    log_flip = flip * jax.nn.log_sigmoid(logit) + (1 - flip) * jax.nn.log_sigmoid(-logit)
    return (
        jnp.sum(norm.logpdf(h, 0.5 * x, 1.0))
        + log_flip
        + norm.logpdf(y, jnp.sum(h) + flip, 2.0)
    )


KEYS = jax.random.split(jax.random.key(0), 16)


def test_simulate_records_choices_and_scores_them_by_hand():
    tr = model.simulate(KEYS[0], 0.5)
    assert sorted(tr.choices) == ["x", "z"]
    z, x = tr.choices["z"], tr.choices["x"]
    np.testing.assert_allclose(tr.score, norm.logpdf(z, 0.5, 1.0) + norm.logpdf(x, z, 1.0), 1e-5)
    assert tr.retval == x


def test_assess_of_simulated_traces_gives_their_scores():
    traces = jax.vmap(hierarchical.simulate, in_axes=(0, None))(KEYS, 1.5)
    scores, retvals = jax.vmap(hierarchical.assess, in_axes=(0, None))(traces.choices, 1.5)
    np.testing.assert_allclose(scores, traces.score, rtol=1e-5)
    np.testing.assert_allclose(retvals, traces.retval, rtol=1e-6)
    hand = jax.vmap(hand_log_joint, in_axes=(0, None))(traces.choices, 1.5)
    np.testing.assert_allclose(traces.score, hand, rtol=1e-5)
    assert traces.choices["enc"]["h"].shape == (16, 3)
    assert jnp.unique(traces.choices["enc"]["flip"]).shape == (2,), "both outcomes drawn"


def test_generate_weight_is_the_log_density_of_the_constrained_choices():
    for key in KEYS[:4]:
        tr, log_w = model.generate(key, {"x": 1.0}, 0.0)
        z = tr.choices["z"]
        assert tr.choices["x"] == 1.0
        np.testing.assert_allclose(log_w, norm.logpdf(1.0, z, 1.0), rtol=1e-5)
        np.testing.assert_allclose(tr.score, model.assess(tr.choices, 0.0)[0], rtol=1e-5)


def test_generate_nested_constraints_weight_and_score():
    constraints = {"enc": {"flip": 1}, "y": 0.3}
    tr, log_w = hierarchical.generate(KEYS[1], constraints, 1.5)
    h = tr.choices["enc"]["h"]
    expected = jax.nn.log_sigmoid(jnp.sum(h)) + norm.logpdf(0.3, jnp.sum(h) + 1, 2.0)
    np.testing.assert_allclose(log_w, expected, rtol=1e-5)
    np.testing.assert_allclose(tr.score, hand_log_joint(tr.choices, 1.5), rtol=1e-5)


def test_generate_without_constraints_is_simulate_and_with_all_is_assess():
    tr = hierarchical.simulate(KEYS[2], 1.5)
    free, log_w = hierarchical.generate(KEYS[2], {}, 1.5)
    jax.tree.map(np.testing.assert_array_equal, free, tr)
    assert log_w == 0.0
    full, log_w = hierarchical.generate(KEYS[3], tr.choices, 1.5)
    jax.tree.map(np.testing.assert_array_equal, full.choices, tr.choices)
    np.testing.assert_allclose(log_w, tr.score, rtol=1e-6)


def test_generate_weights_estimate_the_marginal_likelihood(stats):
    # With the prior as proposal, E[exp(log_w)] = p(x) = N(x; mu0, sqrt(2)).
    samples = stats.draws(lambda k: jnp.exp(model.generate(k, {"x": 1.0}, 0.0)[1]), 1, 20_000)
    stats.check_unbiased(samples, norm.pdf(1.0, 0.0, np.sqrt(2.0)))


def test_traces_cross_jit_and_vmap():
    eager = hierarchical.simulate(KEYS[4], 1.5)
    jitted = jax.jit(hierarchical.simulate)(KEYS[4], 1.5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jitted)
    passed = jax.jit(lambda tr: tr)(eager)
    assert isinstance(passed, pv.Trace) and passed.choices["enc"].keys() == {"h", "flip"}
    logp = jax.jit(hierarchical.assess)(eager.choices, 1.5)[0]
    np.testing.assert_allclose(logp, eager.score, rtol=1e-5)


def test_a_call_object_records_its_function_and_arguments():
    call = encoder(1.0, 0.5)
    assert isinstance(call, pv.Call) and call.gen_fn is encoder and call.args == (1.0, 0.5)


def test_merge_combines_nested_choice_maps():
    merged = pv.merge({"enc": {"h": 1.0}}, {"enc": {"flip": 1}, "y": 2.0}, {})
    assert merged == {"enc": {"h": 1.0, "flip": 1}, "y": 2.0}
    tr = hierarchical.simulate(KEYS[5], 1.5)
    logp, _ = hierarchical.assess(
        pv.merge({"enc": tr.choices["enc"]}, {"y": tr.choices["y"]}), 1.5
    )
    np.testing.assert_allclose(logp, tr.score, rtol=1e-6)


def test_merge_rejects_an_address_given_twice():
    with pytest.raises(pv.ChoiceError, match=r"two choice maps give a value at 'enc/h'"):
        pv.merge({"enc": {"h": 1.0}}, {"enc": {"h": 2.0}})
    with pytest.raises(TypeError, match="argument 1 is a list, not a choice map"):
        pv.merge({}, [1.0])


def test_subclass_that_misses_a_method_says_which():
    class Half(pv.GenerativeFunction):
        def simulate(self, key):
            return pv.Trace({}, 0.0, None)

    with pytest.raises(NotImplementedError, match="Half does not implement assess"):
        Half().assess({})
    with pytest.raises(NotImplementedError, match="does not implement assess"):
        pv.density(Half(), {})
