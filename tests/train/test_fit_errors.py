"""What `fit` and `make_step` do with bad input and with training that goes non-finite."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv


@pv.expectation
def linear(theta):
    return 0.0 * pv.sample("z", dist.Normal(0.0, 1.0)) + theta


def test_a_nan_objective_stops_with_the_step_and_the_last_good_params():
    @pv.expectation
    def breaks_at_38(theta):
        # SGD(1) on theta gives theta_t = t; the objective is nan from step 38 on.
        return jnp.where(theta < 37.5, theta, jnp.nan)

    # SGD(1) that counts its steps in its state.
    counting_sgd = optax.chain(optax.scale_by_schedule(lambda count: 1.0), optax.scale(-1.0))
    with pytest.raises(pv.NonFiniteError, match=r"stopped at step 38: the objective") as info:
        pv.fit(jax.random.key(0), breaks_at_38, jnp.array(0.0), counting_sgd,
               direction="maximize", num_steps=100, chunk_size=10, progress=False)
    assert info.value.step == 38
    result = info.value.result
    assert float(result.params) == 38.0  # 38 good updates; the 39th undone
    assert int(result.opt_state[0].count) == 38  # the optimizer state of the same moment
    np.testing.assert_array_equal(result.history, np.arange(38.0))


@jax.custom_jvp
def _poisoned(x):
    return x


@_poisoned.defjvp
def _poisoned_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return x, jnp.where(x >= 5.0, jnp.nan, 1.0) * dx


def test_a_nan_gradient_stops_with_the_params_before_it():
    @pv.expectation
    def nan_gradient_from_5(theta):
        return _poisoned(theta)  # finite value, nan gradient once theta reaches 5

    with pytest.raises(pv.NonFiniteError, match=r"step 5: the updated parameters") as info:
        pv.fit(jax.random.key(0), nan_gradient_from_5, jnp.array(0.0), optax.sgd(1.0),
               direction="maximize", num_steps=12, chunk_size=3, progress=False)
    assert info.value.step == 5
    assert float(info.value.result.params) == 5.0
    assert info.value.result.history.shape == (5,)


def test_the_direction_is_required_and_checked():
    with pytest.raises(TypeError, match="direction"):
        pv.fit(jax.random.key(0), linear, 0.0, optax.sgd(0.1), num_steps=1)
    with pytest.raises(ValueError, match=r"direction='max'.*'maximize'.*'minimize'"):
        pv.fit(jax.random.key(0), linear, 0.0, optax.sgd(0.1), direction="max", num_steps=1)
    with pytest.raises(ValueError, match="make_step: direction="):
        pv.make_step(linear, optax.sgd(0.1), direction="up")


def test_the_objective_must_be_an_expectation_program():
    def plain(theta):
        return theta

    with pytest.raises(TypeError, match=r"'plain' is not an expectation program.*@pv.expectation"):
        pv.fit(jax.random.key(0), plain, 0.0, optax.sgd(0.1), direction="maximize", num_steps=1)


def test_the_optimizer_must_be_an_optax_transformation():
    with pytest.raises(TypeError, match=r"not an optax gradient transformation.*optax.adam"):
        pv.fit(jax.random.key(0), linear, 0.0, optax.adam, direction="maximize", num_steps=1)


def test_the_length_of_training_must_be_given_once():
    with pytest.raises(ValueError, match="exactly one of num_steps=... and num_epochs="):
        pv.fit(jax.random.key(0), linear, 0.0, optax.sgd(0.1), direction="maximize")
    with pytest.raises(ValueError, match="num_epochs needs data"):
        pv.fit(jax.random.key(0), linear, 0.0, optax.sgd(0.1), direction="maximize",
               num_epochs=2)


def test_batch_sizes_and_data_are_checked():
    @pv.expectation
    def mean_x(theta, batch):
        return theta * jnp.mean(batch)

    with pytest.raises(ValueError, match=r"batch_size=11 must be between 1 and .* 10"):
        pv.fit(jax.random.key(0), mean_x, 0.0, optax.sgd(0.1), direction="maximize",
               num_steps=1, data=jnp.ones(10), batch_size=11)
    with pytest.raises(ValueError, match="batch_size was given without data"):
        pv.fit(jax.random.key(0), linear, 0.0, optax.sgd(0.1), direction="maximize",
               num_steps=1, batch_size=4)
    with pytest.raises(ValueError, match=r"share a leading \(datapoint\) axis.*\[3, 4\]"):
        pv.fit(jax.random.key(0), mean_x, 0.0, optax.sgd(0.1), direction="maximize",
               num_steps=1, data=(jnp.ones(3), jnp.ones(4)))


def test_a_non_scalar_objective_is_explained():
    @pv.expectation
    def per_point(theta, batch):
        return theta * batch

    with pytest.raises(pv.ProgramError, match=r"returned shape \(4,\).*per_datapoint=True"):
        pv.fit(jax.random.key(0), per_point, 0.0, optax.sgd(0.1), direction="maximize",
               num_steps=1, data=jnp.ones(4))

    @pv.expectation
    def pairs(theta, x):
        return theta * jnp.stack([x, x])

    with pytest.raises(pv.ProgramError, match=r"shape \(2,\) for one datapoint.*a scalar"):
        pv.fit(jax.random.key(0), pairs, 0.0, optax.sgd(0.1), direction="maximize",
               num_steps=1, data=jnp.ones(4), per_datapoint=True)


def test_per_datapoint_needs_a_batch():
    train = pv.make_step(linear, optax.sgd(0.1), direction="maximize", per_datapoint=True)
    with pytest.raises(ValueError, match="per_datapoint=True but no batch was given"):
        train.step(train.init(0.0), jax.random.key(0))


def test_a_callback_period_needs_a_callback():
    with pytest.raises(ValueError, match="callback_every was given without a callback"):
        pv.fit(jax.random.key(0), linear, 0.0, optax.sgd(0.1), direction="maximize",
               num_steps=1, callback_every=5)


def test_the_estimator_must_be_an_estimator():
    with pytest.raises(TypeError, match=r"not a pv.train.Estimator.*moving_average_baseline"):
        pv.make_step(linear, optax.sgd(0.1), direction="maximize", estimator=0.9)
