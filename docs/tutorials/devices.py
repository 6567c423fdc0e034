# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Several devices
#
# progvi trains on several devices through JAX's own machinery: give `pv.fit` or
# `pv.make_step` a `jax.sharding.Mesh`, and the minibatch's leading axis is split over its
# devices while the parameters stay replicated. XLA partitions the per-datapoint estimates and
# inserts the all-reduces of the mean and of the gradient; progvi adds no communication code.
# The result is the single-device one, up to the order in which float32 sums are added.
#
# No accelerator is needed to try it: XLA can split the CPU into several virtual devices. The
# flag must be set before JAX is imported, so it comes first.

# %%
import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]).strip()
os.environ["JAX_PLATFORMS"] = "cpu"  # the virtual devices are CPU devices

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import progvi as pv  # noqa: E402

print(jax.devices())

# %% [markdown]
# ## A per-datapoint objective
#
# $z \sim \mathcal{N}(0, 1)$, $x_i \mid z \sim \mathcal{N}(z, 1)$ for 512 points, and a
# normal guide for $z$. The program is the ELBO's share of one datapoint; `fit` vmaps it over
# each minibatch (`per_datapoint=True`), and that vmapped axis is what gets split.

# %%
xs = 2.0 + jax.random.normal(jax.random.key(0), (512,))


@pv.expectation
def local_elbo(phi, x):
    q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
    z = pv.sample("z", q)
    global_terms = dist.Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)
    return dist.Normal(z, 1.0).log_prob(x) + global_terms / len(xs)


start = {"m": jnp.array(0.0), "log_s": jnp.array(0.0)}
settings = dict(direction="maximize", num_steps=500, data=xs, batch_size=64,
                per_datapoint=True, progress=False)
adam = optax.adam(optax.cosine_decay_schedule(0.05, 500))

# %% [markdown]
# ## One device, then four
#
# The only change is `sharding=mesh`. A one-dimensional mesh over all devices, with its axis
# named `"batch"`, splits each minibatch of 64 into four pieces of 16 (the batch size must
# divide evenly over the devices).

# %%
mesh = Mesh(np.array(jax.devices()), ("batch",))
one = pv.fit(jax.random.key(1), local_elbo, start, adam, **settings)
four = pv.fit(jax.random.key(1), local_elbo, start, adam, sharding=mesh, **settings)

print(f"{'':20}{'m':>10}{'s':>10}")
for name, result in (("1 device", one), ("4 devices", four)):
    print(f"{name:20}{float(result.params['m']):>10.5f}"
          f"{float(jnp.exp(result.params['log_s'])):>10.5f}")
print("largest difference of the params:",
      max(float(jnp.abs(a - b)) for a, b in zip(jax.tree.leaves(one.params),
                                                jax.tree.leaves(four.params), strict=True)))
print("largest difference of the objective's history:",
      float(np.abs(one.history - four.history).max()))

# %% [markdown]
# ## How a sharded batch is laid out
#
# Inside the step the batch is constrained to `NamedSharding(mesh, PartitionSpec("batch"))`.
# Placed that way by hand, each device holds a quarter of it:

# %%
batch = jax.device_put(xs[:64], NamedSharding(mesh, PartitionSpec("batch")))
for shard in batch.addressable_shards:
    print(shard.device, "holds datapoints", shard.index[0])

# %% [markdown]
# ## `pv.make_step` with a mesh
#
# The same argument makes a step for a loop of one's own. Each step is jitted once; the
# minibatches here are plain slices of the data, and the step lays them out over the mesh.

# %%
def run(sharding):
    train = pv.make_step(local_elbo, adam, direction="maximize", per_datapoint=True,
                         sharding=sharding)
    step = jax.jit(train.step)
    state = train.init(start, xs[:64])
    values = []
    for t in range(40):
        batch = xs[(64 * t) % 512:(64 * t) % 512 + 64]
        state, value = step(state, jax.random.key(t), batch)
        values.append(float(value))
    return state, np.array(values)


state_one, values_one = run(None)
state_four, values_four = run(mesh)
print("m after 40 steps:", float(state_one.params["m"]), float(state_four.params["m"]))
print("largest difference of the values:", float(np.abs(values_one - values_four).max()))

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
left.plot(one.history, lw=1.5, label="1 device")
left.plot(four.history, lw=0.8, ls="--", label="4 devices (sharding=mesh)")
left.set_ylim(float(np.percentile(one.history, 5)) - 1, float(one.history.max()) + 0.5)
left.set_xlabel("step")
left.set_ylabel("objective estimate")
left.set_title("pv.fit on one device and on four")
left.legend()
right.plot(np.abs(one.history - four.history), lw=0.8)
right.set_xlabel("step")
right.set_ylabel("|difference| (nats)")
right.set_title("Difference between the two histories")
fig.tight_layout()
plt.show()

# %% [markdown]
# The differences, where there are any, are float32 rounding: the mean over a batch split in
# pieces is added in another order. On several hosts, `jax.distributed.initialize()` joins
# their devices into one `jax.devices()`, and the same `fit` with a mesh over all of them runs
# there; `examples/distributed.py` is such a script (see
# [Checkpoints and devices](../checkpoints.md)).
