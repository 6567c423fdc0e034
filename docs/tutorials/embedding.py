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
# # Embedding progvi in a JAX codebase
#
# `pv.fit` is a convenience, not a requirement. An expectation program's `estimate(key,
# *args)` is an ordinary differentiable JAX function: `jax.jit`, `jax.vmap` and `jax.grad`
# apply to it, and `jax.grad` of it is an unbiased estimate of the gradient of the
# expectation. This notebook uses that to train with a loop of one's own, first through
# `pv.make_step`, then from the raw gradient, and with the parameters held in equinox and
# flax modules.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpyro.distributions as dist
import optax
from flax import nnx

import progvi as pv

# %% [markdown]
# ## An amortized guide
#
# The model: $z \sim \mathcal{N}(0, 1)$, $x \mid z \sim \mathcal{N}(z, 0.5)$. For each $x$ the
# posterior is $\mathcal{N}(0.8\,x, \sqrt{0.2})$. An *amortized* guide maps $x$ to the
# parameters of $q(z \mid x)$; the program below is the ELBO of one datapoint, and `encode`
# is any function of the parameters and $x$.

# %%
def elbo_of(encode):
    @pv.expectation
    def local_elbo(params, x):
        loc, log_scale = encode(params, x)
        q = dist.Normal(loc, jnp.exp(log_scale))
        z = pv.sample("z", q)
        return dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 0.5).log_prob(x) - q.log_prob(z)

    return local_elbo


def linear(params, x):
    return params["a"] * x + params["b"], params["c"]


local_elbo = elbo_of(linear)
params = {"a": jnp.array(0.0), "b": jnp.array(0.0), "c": jnp.array(0.0)}
xs = jnp.sqrt(1.25) * jax.random.normal(jax.random.key(0), (512,))  # draws of p(x)

# %% [markdown]
# ## `estimate` under `jit`, `vmap` and `grad`
#
# A batch objective is the mean of per-datapoint estimates, one key each; `jax.grad` of that
# mean is transposed once for the whole batch. Everything composes with `jax.jit`.

# %%
@jax.jit
def batch_objective(params, key, batch):
    keys = jax.random.split(key, len(batch))
    return jnp.mean(jax.vmap(local_elbo.estimate, in_axes=(0, None, 0))(keys, params, batch))


value, grad = jax.value_and_grad(batch_objective)(params, jax.random.key(1), xs[:64])
print(f"batch ELBO estimate {float(value):.3f}")
print("its gradient", {name: round(float(g), 3) for name, g in grad.items()})

# %% [markdown]
# ## Your own loop with `pv.make_step`
#
# `pv.make_step` returns two pure functions: `init(params, batch)` builds a `pv.TrainState`
# (params, optimizer state, the states of stateful estimators, the step count), and
# `step(state, key, batch)` does one update. Here a whole epoch is one compiled `lax.scan`.

# %%
train = pv.make_step(local_elbo, optax.adam(0.05), direction="maximize", per_datapoint=True)
batch_size = 64


@jax.jit
def epoch(state, key):
    order = jax.random.permutation(key, len(xs))

    def body(state, t):
        batch = xs[jax.lax.dynamic_slice_in_dim(order, t * batch_size, batch_size)]
        return train.step(state, jax.random.fold_in(key, t), batch)

    return jax.lax.scan(body, state, jnp.arange(len(xs) // batch_size))


state = train.init(params, xs[:batch_size])
make_step_history = []
for e in range(40):
    state, values = epoch(state, jax.random.key(100 + e))
    make_step_history.extend(values.tolist())
print(f"after {int(state.step)} steps:",
      {name: round(float(v), 3) for name, v in state.params.items()})
print("exact: a = 0.8, b = 0, c = log(sqrt(0.2)) =", round(float(jnp.log(jnp.sqrt(0.2))), 3))

# %% [markdown]
# ## From the raw gradient
#
# Nothing in the loop above needs progvi beyond the program: the gradient of
# `batch_objective` from earlier feeds optax directly (negated, since optax minimizes). For a
# program without stateful estimators this is the same update that `make_step` performs.

# %%
optimizer = optax.adam(0.05)


@jax.jit
def raw_step(carry, key):
    params, opt_state = carry
    batch = xs[jax.random.choice(key, len(xs), (batch_size,), replace=False)]
    value, grad = jax.value_and_grad(batch_objective)(params, jax.random.fold_in(key, 1), batch)
    updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grad), opt_state)
    return (optax.apply_updates(params, updates), opt_state), value


(raw_params, _), raw_history = jax.lax.scan(
    raw_step, (params, optimizer.init(params)), jax.random.split(jax.random.key(2), 320))
print({name: round(float(v), 3) for name, v in raw_params.items()})

# %% [markdown]
# ## Modules as parameters
#
# An equinox module is a pytree, and progvi takes it as the parameters as it is: no
# `eqx.partition` / `eqx.combine`, the activation function travels in the pytree's structure
# (its gradient is None there, as in equinox), and the fitted module comes back whole.

# %%
def mlp_encode(net, x):
    out = net(x[None])
    return out[0], out[1]


mlp = eqx.nn.MLP(1, 2, 16, 1, activation=jax.nn.tanh, key=jax.random.key(3))
eqx_elbo = elbo_of(mlp_encode)
fit_eqx = pv.fit(jax.random.key(4), eqx_elbo, mlp, optax.adam(0.01), direction="maximize",
                 num_steps=300, data=xs, batch_size=batch_size, per_datapoint=True,
                 progress=False)
print(type(fit_eqx.params).__name__, "activation:", fit_eqx.params.activation.__name__)

# %% [markdown]
# A flax.nnx module works the same way, without `nnx.split` / `nnx.merge`:

# %%
class Encoder(nnx.Module):
    def __init__(self, rngs):
        self.hidden, self.out = nnx.Linear(1, 16, rngs=rngs), nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


fit_nnx = pv.fit(jax.random.key(5), elbo_of(mlp_encode), Encoder(nnx.Rngs(6)),
                 optax.adam(0.01), direction="maximize", num_steps=300, data=xs,
                 batch_size=batch_size, per_datapoint=True, progress=False)
print(type(fit_nnx.params).__name__)

# %% [markdown]
# The four fits learn the same posterior map; each guide's mean and standard deviation as
# functions of $x$:

# %%
grid = jnp.linspace(-3.0, 3.0, 61)
fitted = {"make_step loop (linear)": (linear, state.params),
          "raw-gradient loop (linear)": (linear, raw_params),
          "pv.fit, equinox MLP": (mlp_encode, fit_eqx.params),
          "pv.fit, flax.nnx MLP": (mlp_encode, fit_nnx.params)}
fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.6))
for name, (encode, fitted_params) in fitted.items():
    loc, log_scale = jax.vmap(lambda x, e=encode, p=fitted_params: e(p, x))(grid)
    left.plot(grid, loc, lw=1, label=name)
    middle.plot(grid, jnp.exp(log_scale), lw=1, label=name)
left.plot(grid, 0.8 * grid, "k--", lw=1, label="exact")
middle.axhline(float(jnp.sqrt(0.2)), color="k", ls="--", lw=1, label="exact")
middle.set_ylim(0.0, 1.0)
for ax, what in ((left, "mean"), (middle, "standard deviation")):
    ax.set_xlabel("x")
    ax.set_ylabel(f"{what} of q(z | x)")
    ax.set_title(f"The guide's {what}")
left.legend(fontsize=7)
right.plot(make_step_history, lw=0.6, label="make_step loop")
right.plot(raw_history, lw=0.6, alpha=0.7, label="raw-gradient loop")
right.plot(fit_eqx.history, lw=0.6, alpha=0.7, label="pv.fit, equinox")
right.set_ylim(-4.0, 0.0)
right.set_xlabel("step")
right.set_ylabel("batch ELBO estimate")
right.set_title("Training curves")
right.legend(fontsize=7)
fig.tight_layout()
plt.show()
