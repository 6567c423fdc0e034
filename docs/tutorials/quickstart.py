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
# # Quick start
#
# This notebook fits an approximate posterior to a small Bayesian model from start to end: the
# model and the variational family (the *guide*) are generative functions, the objective is
# the ELBO written as an expectation program, and `pv.fit` maximizes it with an optax
# optimizer. The model is simple enough that the exact posterior is known, so the fitted guide
# can be checked against it.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv

# %% [markdown]
# ## A model and a guide
#
# An unknown mean $z \sim \mathcal{N}(0, 1)$ and five observations $x_i \mid z \sim
# \mathcal{N}(z, 1)$. A `@pv.gen` function names each random choice with an address; the
# observations are one choice `"x"`, a vector. The guide $q_\phi(z) = \mathcal{N}(m, e^{\log
# s})$ samples the same latent address `"z"`, with parameters `phi`.

# %%
xs = jnp.array([0.9, 1.7, 1.2, 2.4, 1.5])


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0).expand([len(xs)]).to_event(1))


@pv.gen
def guide(phi):
    pv.sample("z", dist.Normal(phi["m"], jnp.exp(phi["log_s"])))


trace = model.simulate(jax.random.key(0))
print("z =", np.round(np.asarray(trace.choices["z"]), 3))
print("x =", np.round(np.asarray(trace.choices["x"]), 3))
print(f"log density of the choices: {float(trace.score):.3f}")

# %% [markdown]
# ## The ELBO as a program
#
# `pv.elbo(model, guide, observations, ...)` draws $z$ from the guide and returns
# $\log p(x, z) - \log q_\phi(z)$. Inside `@pv.expectation` that value is a random variable:
# `estimate` returns one unbiased estimate of its expectation, and `grad` one unbiased
# estimate of the gradient (here by reparameterization, the default for a Normal).

# %%
@pv.expectation
def elbo(phi):
    return pv.elbo(model, guide, {"x": xs}, guide_args=(phi,))


phi0 = {"m": jnp.array(0.0), "log_s": jnp.array(0.0)}
value, grad = elbo.value_and_grad(jax.random.key(1), phi0)
print(f"one ELBO estimate at phi0: {float(value):.3f}")
print("one gradient estimate:", {name: round(float(g), 3) for name, g in grad.items()})

# %% [markdown]
# Averaging many estimates gives the ELBO itself, which is below the log-evidence
# $\log p(x)$; for this model the evidence is a multivariate normal density,
# $x \sim \mathcal{N}(0, I + \mathbf{1}\mathbf{1}^\top)$.

# %%
keys = jax.random.split(jax.random.key(2), 4000)
estimates = jax.vmap(lambda k: elbo.estimate(k, phi0))(keys)
n = len(xs)
log_evidence = dist.MultivariateNormal(jnp.zeros(n), jnp.eye(n) + jnp.ones((n, n))).log_prob(xs)
print(f"ELBO at phi0 (mean of 4000): {float(estimates.mean()):.3f} "
      f"+- {float(estimates.std() / jnp.sqrt(4000.0)):.3f}")
print(f"log p(x):                    {float(log_evidence):.3f}")

# %% [markdown]
# ## Fitting
#
# `pv.fit` runs compiled chunks of steps of any optax optimizer; `direction="maximize"` says
# that the ELBO is to be maximized (it is a required argument, never guessed). The result holds
# the fitted parameters and the history of the objective's estimates.

# %%
optimizer = optax.adam(optax.cosine_decay_schedule(0.05, 500))
result = pv.fit(jax.random.key(3), elbo, phi0, optimizer, direction="maximize",
                num_steps=500, progress=False)

post_mean, post_std = xs.sum() / (n + 1), 1.0 / jnp.sqrt(n + 1.0)
print(f"{'':10}{'mean':>8}{'std':>8}")
print(f"{'guide':10}{float(result.params['m']):>8.3f}"
      f"{float(jnp.exp(result.params['log_s'])):>8.3f}")
print(f"{'posterior':10}{float(post_mean):>8.3f}{float(post_std):>8.3f}")

# %% [markdown]
# The guide is in the model's family of posteriors (a normal), so at the optimum the ELBO
# equals $\log p(x)$ and the guide is the exact posterior.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
left.plot(result.history, lw=0.6, label="ELBO estimate at each step")
left.axhline(float(log_evidence), color="k", ls="--", lw=1, label="log p(x)")
left.set_ylim(float(log_evidence) - 15, float(log_evidence) + 2)
left.set_xlabel("step")
left.set_ylabel("ELBO estimate (nats)")
left.set_title("Training")
left.legend()
z = jnp.linspace(-0.5, 3.0, 300)
fitted = dist.Normal(result.params["m"], jnp.exp(result.params["log_s"]))
right.plot(z, jnp.exp(dist.Normal(post_mean, post_std).log_prob(z)), "k--", label="posterior")
right.plot(z, jnp.exp(fitted.log_prob(z)), label="fitted guide")
right.set_xlabel("z")
right.set_ylabel("density")
right.set_title("Exact posterior and fitted guide")
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Next: [objectives as programs](objectives.py) compares the ELBO with other bounds on
# $\log p(x)$, and [strategies](strategies.py) changes how the gradient is estimated.
