"""Estimator state found in the program: created, read before, updated after, keyed by address."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv


def moving(decay):
    return pv.train.moving_average_baseline(decay)


@pv.expectation
def reward(mu):
    # E[20 - (z - 3)^2] = 19 - (mu - 3)^2 for z ~ N(mu, 1); the baseline follows the reward.
    z = pv.sample("z", dist.Normal(mu, 1.0), strategy=pv.reinforce(baseline=moving(0.9)))
    return 20.0 - (z - 3.0) ** 2


def test_a_baseline_follows_the_values_of_the_program_at_its_address():
    baseline = moving(0.9)
    result = pv.fit(jax.random.key(0), reward, jnp.array(1.0), optax.sgd(0.0),
                    direction="maximize", num_steps=25, chunk_size=10, progress=False)
    assert list(result.estimator_state) == ["z"]
    state = baseline.init()
    for value in result.history:
        state = baseline.update(value, state)
    np.testing.assert_allclose(result.estimator_state["z"].average, state.average, rtol=1e-5)
    np.testing.assert_allclose(result.estimator_state["z"].weight, state.weight, rtol=1e-6)


def test_the_baseline_read_from_the_state_reduces_variance_without_bias():
    warm = pv.fit(jax.random.key(0), reward, jnp.array(1.0), optax.sgd(0.0),
                  direction="maximize", num_steps=50, progress=False)
    state = warm.estimator_state
    assert abs(float(state["z"].average) - 15.0) < 2.0  # E[reward] = 15 at mu = 1, sd ~4.2
    keys = jax.random.split(jax.random.key(1), 4000)

    def grad_with(states):
        return jax.vmap(lambda k: jax.grad(
            lambda mu: reward.estimate_with_state(k, states, mu)[0])(1.0))(keys)

    plain = grad_with(reward.init_state(1.0))  # the initial baseline is 0
    centred = grad_with(state)
    # Both estimate d/dmu [19 - (mu - 3)^2] = 4 at mu = 1; measured variances ~214 and ~33.
    for grads in (plain, centred):
        assert abs(float(grads.mean()) - 4.0) < 4 * float(grads.std()) / np.sqrt(len(keys))
    assert float(centred.var()) < float(plain.var()) / 3


def test_estimate_starts_from_the_initial_state_and_estimate_with_state_moves_it():
    key = jax.random.key(3)
    value, state = reward.estimate_with_state(key, None, 1.0)
    assert float(value) == float(reward.estimate(key, 1.0))
    expected = moving(0.9).update(value, moving(0.9).init())
    np.testing.assert_allclose(state["z"].average, expected.average, rtol=1e-6)
    again, _ = jax.jit(reward.estimate_with_state)(key, state, 1.0)
    assert float(again) == float(value)  # the baseline changes the gradient, not the value


@pv.expectation
def per_datapoint_terms(mu, xs):
    def term(x):
        z = pv.sample("z", dist.Normal(mu, 1.0), strategy=pv.reinforce(baseline=moving(0.0)))
        return x + 0.0 * z

    return pv.plate(term, xs)


def test_inside_plate_a_baseline_follows_each_datapoint_and_moves_by_their_mean():
    xs = jnp.array([1.0, 2.0, 6.0])
    _, state = per_datapoint_terms.estimate_with_state(jax.random.key(0), None, 0.0, xs)
    # decay 0: the average is the last value; each datapoint's term is its x.
    np.testing.assert_allclose(state["z"].average, 3.0, rtol=1e-6)


def test_with_per_datapoint_the_states_of_the_datapoints_are_averaged():
    @pv.expectation
    def one(mu, x):
        z = pv.sample("z", dist.Normal(mu, 1.0), strategy=pv.reinforce(baseline=moving(0.0)))
        return x + 0.0 * z

    train = pv.make_step(one, optax.sgd(0.0), direction="maximize", per_datapoint=True)
    xs = jnp.array([1.0, 3.0, 8.0])
    state = train.init(jnp.array(0.0), xs)
    assert list(state.estimator_state) == ["z"]
    state, value = jax.jit(train.step)(state, jax.random.key(0), xs)
    np.testing.assert_allclose(state.estimator_state["z"].average, 4.0, rtol=1e-6)
    assert float(value) == 4.0


def test_several_stateful_estimators_in_one_program_each_at_its_address():
    noise = dist.Normal(0.0, 2.0)

    @pv.expectation
    def log_weight(m):
        y = pv.sample("y", noise)
        return -0.5 * (y - m) ** 2 - noise.log_prob(y)

    @pv.expectation
    def both(m):
        log_z = pv.log_expectation(log_weight, m, estimator=pv.compositional(0.5))
        b = pv.sample("b", dist.Bernoulli(0.3), strategy=pv.reinforce(baseline=moving(0.5)))
        return log_z + b

    states = both.init_state(0.0)
    assert sorted(states) == ["b", "log_weight"]
    _, after = both.estimate_with_state(jax.random.key(0), states, 0.0)
    assert float(after["log_weight"].weight) == 0.5 and float(after["b"].weight) == 0.5
    result = pv.fit(jax.random.key(1), both, 0.0, optax.sgd(0.0), direction="minimize",
                    num_steps=4, progress=False)
    assert sorted(result.estimator_state) == ["b", "log_weight"]
    restored = pickle.loads(pickle.dumps(result.estimator_state))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(result.estimator_state),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_baseline_before_an_enumerated_site_follows_the_enumerated_value():
    @pv.expectation
    def program(theta):
        z = pv.sample("z", dist.Normal(theta, 1.0), strategy=pv.reinforce(baseline=moving(0.0)))
        b = pv.sample("b", dist.Bernoulli(0.25), strategy=pv.enum)
        return 4.0 * b + 0.0 * z

    value, state = program.estimate_with_state(jax.random.key(0), None, 0.0)
    assert float(value) == pytest.approx(1.0)  # E[4 b] by enumeration
    assert float(state["z"].average) == pytest.approx(1.0)


def test_chunking_does_not_change_the_states():
    runs = [pv.fit(jax.random.key(2), reward, jnp.array(0.0), optax.adam(0.05),
                   direction="maximize", num_steps=30, chunk_size=c, progress=False)
            for c in (7, 30)]
    for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1]), strict=True):
        np.testing.assert_array_equal(a, b)


# Where no state can be threaded: each a clear error naming the address.

def test_a_step_whose_state_lacks_the_programs_estimators_says_how_to_create_it():
    @pv.expectation
    def needs_data(mu, x):
        z = pv.sample("z", dist.Normal(mu, 1.0), strategy=pv.reinforce(baseline=moving(0.9)))
        return jnp.mean(x) * z

    train = pv.make_step(needs_data, optax.sgd(0.1), direction="maximize")
    state = train.init(jnp.array(0.0))  # no batch: the program cannot be traced
    assert state.estimator_state == {}
    with pytest.raises(pv.ProgramError, match=r"stateful estimators at \['z'\].*init\(params, "
                                              r"batch\)"):
        train.step(state, jax.random.key(0), jnp.ones(3))
    state = train.init(jnp.array(0.0), jnp.ones(3))
    assert list(state.estimator_state) == ["z"]


def test_estimate_with_state_needs_the_dict_of_states():
    with pytest.raises(TypeError, match=r"state=list.*init_state"):
        reward.estimate_with_state(jax.random.key(0), [1.0], 1.0)


def test_a_baseline_inside_the_inner_program_of_a_log_expectation_is_refused():
    @pv.expectation
    def log_weight(m):
        return pv.sample("y", dist.Normal(m, 1.0), strategy=pv.reinforce(baseline=moving(0.9)))

    @pv.expectation
    def outer(m):
        return pv.log_expectation(log_weight, m, estimator=pv.plug_in(2))

    with pytest.raises(pv.ProgramError, match=r"'log_weight/y' is inside the inner program of "
                                              r"pv.log_expectation 'log_weight'.*Move it out"):
        outer.estimate(jax.random.key(0), 0.0)


def test_a_strategy_with_two_stateful_fields_is_refused():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class TwoBaselines(pv.Reinforce):
        other: object = None
        dynamic_fields = ("baseline", "other")

    @pv.expectation
    def program(mu):
        s = TwoBaselines(baseline=moving(0.9), other=moving(0.5))
        return pv.sample("z", dist.Normal(mu, 1.0), strategy=s)

    with pytest.raises(pv.StrategyError, match=r"at most one"):
        program.estimate(jax.random.key(0), 0.0)
