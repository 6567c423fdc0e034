"""Distributions as generative functions: the interface on a single choice."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

KEY = jax.random.key(0)
normal = pv.distribution(dist.Normal)
coin = pv.distribution(lambda p: dist.Bernoulli(probs=p))


def test_simulate_assess_generate_on_one_choice():
    tr = normal.simulate(KEY, 1.0, 2.0)
    assert tr.choices is tr.retval
    np.testing.assert_allclose(tr.score, dist.Normal(1.0, 2.0).log_prob(tr.choices), rtol=1e-6)
    logp, value = normal.assess(tr.choices, 1.0, 2.0)
    np.testing.assert_allclose(logp, tr.score, rtol=1e-6)
    trace, weight = normal.generate(KEY, 0.5, 1.0, 2.0)
    assert trace.choices == 0.5
    np.testing.assert_allclose(weight, dist.Normal(1.0, 2.0).log_prob(0.5), rtol=1e-6)
    drawn, zero = normal.generate(KEY, None, 1.0, 2.0)
    assert drawn.choices == tr.choices and zero == 0.0
    traces = jax.jit(jax.vmap(normal.simulate, in_axes=(0, None, None)))(
        jax.random.split(KEY, 5), 0.0, 1.0
    )
    assert traces.choices.shape == (5,)


def test_a_distribution_call_is_a_plain_choice_in_a_gen_body():
    @pv.gen
    def model(p):
        flip = pv.sample("flip", coin(p))
        return pv.sample("x", normal(flip * 2.0, 1.0))

    tr = model.simulate(KEY, 0.3)
    assert set(tr.choices) == {"flip", "x"}
    logp, _ = model.assess(tr.choices, 0.3)
    exact = dist.Bernoulli(probs=0.3).log_prob(tr.choices["flip"]) + dist.Normal(
        tr.choices["flip"] * 2.0, 1.0
    ).log_prob(tr.choices["x"])
    np.testing.assert_allclose(logp, exact, rtol=1e-6)


def test_inside_a_program_the_choice_goes_through_the_strategies():
    @pv.expectation
    def program(m):
        return pv.simulate(normal, m, 1.0).retval ** 2

    keys = jax.random.split(KEY, 20_000)
    for strategy in [pv.reparam, pv.reinforce]:
        chosen = pv.with_strategies(program, {"value": strategy})
        grads = np.asarray(jax.jit(jax.vmap(lambda k, c=chosen: c.grad(k, 0.7)))(keys))
        assert abs(grads.mean() - 1.4) < 4 * grads.std() / np.sqrt(grads.size)


def test_errors():
    with pytest.raises(TypeError, match=r"pv\.distribution takes a distribution constructor"):
        pv.distribution(3)
    with pytest.raises(pv.ChoiceError, match=r"'value'"):
        coin.assess(jnp.ones(3, dtype=jnp.int32), 0.3)
