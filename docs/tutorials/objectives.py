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
# # Objectives as programs
#
# In progvi a variational objective is not a fixed menu item: it is a Python function that
# runs inside an expectation program. The library's objectives (`pv.elbo`, `pv.iwae` and the
# others) are written with the same few constructs a user has, `pv.simulate`, `pv.density`,
# `pv.merge` and `pv.particles`. This notebook evaluates three of them on one model whose
# log-evidence is known in closed form: the ELBO, the importance-weighted bound IWAE($K$), and
# a bound written here by hand.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpyro.distributions as dist
from IPython.display import Markdown

import progvi as pv

# %% [markdown]
# ## The model and a deliberately poor guide
#
# $z \sim \mathcal{N}(0, 1)$ and $x \mid z \sim \mathcal{N}(z, 1)$, observed at $x = 2.5$, so
# $p(x) = \mathcal{N}(x; 0, \sqrt 2)$. The guide is kept fixed away from the posterior
# $\mathcal{N}(1.25, 1/\sqrt 2)$, so that the bounds differ visibly.

# %%
x_obs = 2.5


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def guide(phi):
    pv.sample("z", dist.Normal(phi["m"], jnp.exp(phi["log_s"])))


phi = {"m": jnp.array(0.3), "log_s": jnp.array(0.3)}
log_evidence = float(dist.Normal(0.0, jnp.sqrt(2.0)).log_prob(x_obs))
print(f"log p(x) = {log_evidence:.4f}")

# %% [markdown]
# ## The library's objectives
#
# Each objective returns one estimate; wrapping the call in `@pv.expectation` makes it a
# program with `estimate` and `grad`. The number of particles $K$ of `pv.iwae` is a shape,
# so it is a Python int fixed when the program is built.

# %%
@pv.expectation
def elbo(phi):
    return pv.elbo(model, guide, {"x": x_obs}, guide_args=(phi,))


def iwae(num_particles):
    @pv.expectation
    def bound(phi):
        return pv.iwae(model, guide, {"x": x_obs}, num_particles, guide_args=(phi,))

    return bound


# %% [markdown]
# ## An objective of your own
#
# First, the IWAE bound written out: $K$ log-weights $\log w_k = \log p(x, z_k) - \log
# q(z_k)$ drawn by `pv.particles`, then $\log \frac1K \sum_k w_k$. It is the library's
# `pv.iwae` line for line, so both give the same value and the same gradient for the same key.

# %%
def log_weight(phi):
    trace = pv.simulate(guide, phi)
    log_joint, _ = pv.density(model, pv.merge(trace.choices, {"x": x_obs}))
    return log_joint - trace.score


def my_iwae(num_particles):
    @pv.expectation
    def bound(phi):
        log_w = pv.particles(log_weight, num_particles, phi)
        return jax.nn.logsumexp(log_w) - jnp.log(num_particles)

    return bound


key = jax.random.key(0)
for name, program in [("pv.iwae", iwae(8)), ("by hand", my_iwae(8))]:
    value, grad = program.value_and_grad(key, phi)
    print(f"{name:8} value {float(value):.5f}   d/dm {float(grad['m']):.5f}"
          f"   d/dlog_s {float(grad['log_s']):.5f}")

# %% [markdown]
# Second, something the library does not have: the $\chi^2$ upper bound (CUBO, Dieng et al.
# 2017), $\mathrm{CUBO} = \tfrac12 \log \mathbb{E}_q[w^2] \ge \log p(x)$. Its $K$-particle
# estimate $\tfrac12 \log \frac1K \sum_k w_k^2$ is biased downwards (Jensen's inequality:
# at $K = 1$ its expectation is the ELBO), and the bias shrinks as $K$ grows, towards the
# bound itself, which lies above $\log p(x)$.

# %%
def cubo(num_particles):
    @pv.expectation
    def bound(phi):
        log_w = pv.particles(log_weight, num_particles, phi)
        return 0.5 * (jax.nn.logsumexp(2.0 * log_w) - jnp.log(num_particles))

    return bound


# %% [markdown]
# In one dimension the ELBO and the CUBO themselves can be computed by quadrature, to compare
# the estimates with:

# %%
z = jnp.linspace(-12.0, 12.0, 20001)
q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
log_w_grid = dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(x_obs) - q.log_prob(z)
q_grid = jnp.exp(q.log_prob(z)) * (z[1] - z[0])
exact_elbo = float(jnp.sum(q_grid * log_w_grid))
exact_cubo = float(0.5 * jnp.log(jnp.sum(q_grid * jnp.exp(2.0 * log_w_grid))))
print(f"ELBO {exact_elbo:.4f} <= log p(x) {log_evidence:.4f} <= CUBO {exact_cubo:.4f}")

# %% [markdown]
# ## Comparing the values
#
# Each program's expectation is estimated by the mean of 2000 independent estimates (one
# compiled function per program, vmapped over keys); the table gives the mean and its
# standard error.

# %%
keys = jax.random.split(jax.random.key(1), 2000)


def mean_and_stderr(program):
    estimates = jax.jit(jax.vmap(lambda k: program.estimate(k, phi)))(keys)
    return float(estimates.mean()), float(estimates.std() / jnp.sqrt(len(keys)))


sizes = [1, 4, 16, 64]
values = {"ELBO": [mean_and_stderr(elbo)] * len(sizes),
          "IWAE(K)": [mean_and_stderr(iwae(k)) for k in sizes],
          "CUBO(K) estimate": [mean_and_stderr(cubo(k)) for k in sizes]}

rows = ["| K | " + " | ".join(values) + " |", "|---" * (len(values) + 1) + "|"]
for i, k in enumerate(sizes):
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in (column[i] for column in values.values())]
    rows.append(f"| {k} | " + " | ".join(cells) + " |")
rows.append(f"| exact | {exact_elbo:.3f} | {log_evidence:.3f} (log p(x)) | {exact_cubo:.3f} |")
Markdown("\n".join(rows))

# %% [markdown]
# The ELBO does not depend on $K$. IWAE(1) is the ELBO, and IWAE($K$) rises towards $\log
# p(x)$ as $K$ grows; the CUBO estimate rises from the ELBO too, past $\log p(x)$, towards
# the CUBO. A bound written by hand is as much an objective as the library's: `pv.fit` trains
# it, and `pv.with_strategies` changes its gradient estimator.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, column in values.items():
    means = jnp.array([m for m, _ in column])
    errors = jnp.array([s for _, s in column])
    ax.errorbar(sizes, means, yerr=2 * errors, marker="o", ms=4, capsize=2, label=name)
ax.axhline(log_evidence, color="k", ls="--", lw=1, label="log p(x)")
ax.axhline(exact_cubo, color="gray", ls=":", lw=1, label="CUBO (quadrature)")
ax.set_xscale("log", base=2)
ax.set_xlabel("number of particles K")
ax.set_ylabel("expected value of the estimate (nats)")
ax.set_title("Bounds on log p(x) for a fixed guide (±2 standard errors)")
ax.legend()
fig.tight_layout()
plt.show()
