"""Sharded and single-device fits compared, on 8 host devices: python sharded_fit.py.

The mean over a batch split in 8 is summed in another order than on one device, so the results
agree to float32 rounding (relative 1e-5), not always bit for bit.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import progvi as pv  # noqa: E402

assert jax.device_count() == 8, jax.devices()
DATA = jax.random.normal(jax.random.key(0), (256, 3)) + jnp.array([1.0, -2.0, 0.5])
SIZES = {"mean": jnp.zeros(3), "log_s": jnp.zeros(3)}


@pv.expectation
def local_elbo(phi, x):  # z ~ N(0, I), x ~ N(z, I), guide N(mean, exp(log_s)) per datapoint
    q = dist.Normal(phi["mean"], jnp.exp(phi["log_s"])).to_event(1)
    z = pv.sample("z", q)
    b = pv.sample("b", dist.Bernoulli(0.5), strategy=pv.reinforce(
        baseline=pv.train.moving_average_baseline(0.9)))
    pv.report("b", b)
    prior = dist.Normal(0.0, 1.0).expand([3]).to_event(1).log_prob(z)
    return dist.Normal(z, 1.0).to_event(1).log_prob(x) + (prior - q.log_prob(z)) / 256 + 0.0 * b


def run(sharding):
    return pv.fit(jax.random.key(1), local_elbo, SIZES, optax.adam(0.05), direction="maximize",
                  num_steps=60, data=DATA, batch_size=64, per_datapoint=True, chunk_size=20,
                  sharding=sharding, progress=False)


mesh = Mesh(np.array(jax.devices()), ("batch",))
single, sharded = run(None), run(mesh)
named = run(NamedSharding(mesh, PartitionSpec("batch")))
for other in (sharded, named):
    for a, b in zip(jax.tree.leaves((single.params, single.opt_state, single.estimator_state)),
                    jax.tree.leaves((other.params, other.opt_state, other.estimator_state)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single.history, other.history, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(single.metrics["b"], other.metrics["b"])
exact = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
    jax.tree.leaves(single.params), jax.tree.leaves(sharded.params), strict=True))

# The step of make_step lays the batch out over the 8 devices.
train = pv.make_step(local_elbo, optax.adam(0.05), direction="maximize", per_datapoint=True,
                     sharding=mesh)
state = train.init(SIZES, DATA[:64])
lowered = jax.jit(train.step).lower(state, jax.random.key(0), DATA[:64]).as_text()
assert "sharding" in lowered
try:
    run_bad = pv.fit(jax.random.key(1), local_elbo, SIZES, optax.adam(0.05),
                     direction="maximize", num_steps=2, data=DATA, batch_size=60,
                     per_datapoint=True, sharding=mesh, progress=False)
    raise AssertionError("a batch of 60 over 8 devices was accepted")
except ValueError as error:
    assert "cannot be split evenly over the 8 devices" in str(error), error
print(f"sharded equals single-device: bit-for-bit={exact}")
