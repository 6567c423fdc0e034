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
# # Families built by inference
#
# A variational family does not have to be a distribution with a density in closed form. Two
# constructions in progvi make richer families out of simple generative functions, by running
# inference inside the family:
#
# - `pv.marginal(joint, keep, proposal, K)`: the marginal of a family with auxiliary choices
#   (hierarchical VI), its density estimated by importance sampling the auxiliaries;
# - `pv.normalize(target, proposal, K)`: sampling-importance-resampling (SIR) of a target,
#   which approaches the normalized target as $K$ grows.
#
# Both are generative functions, so `pv.elbo` and the other objectives take them as guides.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpyro.distributions as dist
import optax
from IPython.display import Markdown

import progvi as pv

# %% [markdown]
# ## A posterior with two modes
#
# $z \sim \mathcal{N}(0, 1)$ and $x \mid z \sim \mathcal{N}(z^2, 0.5)$, observed at $x = 1.5$:
# the likelihood cannot tell $z$ from $-z$, so the posterior has two symmetric modes. In one
# dimension it and $\log p(x)$ are computed by quadrature on a grid.

# %%
x_obs = 1.5


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z**2, 0.5))


grid = jnp.linspace(-6.0, 6.0, 20001)
log_joint = dist.Normal(0.0, 1.0).log_prob(grid) + dist.Normal(grid**2, 0.5).log_prob(x_obs)
log_evidence = float(jax.nn.logsumexp(log_joint) + jnp.log(grid[1] - grid[0]))
posterior = jnp.exp(log_joint - log_evidence)
print(f"log p(x) = {log_evidence:.4f}")


def elbo_of(family):
    """The ELBO program of `family`, a generative function of the parameters phi."""
    return pv.expectation(lambda phi: pv.elbo(model, family, {"x": x_obs}, guide_args=(phi,)))


# %% [markdown]
# ## A Gaussian guide, for reference
#
# A single normal can cover at most one mode well; the ELBO, which penalizes mass where the
# posterior has none, makes it pick one.

# %%
@pv.gen
def gaussian(phi):
    pv.sample("z", dist.Normal(phi["m"], jnp.exp(phi["log_s"])))


schedule = optax.cosine_decay_schedule(0.05, 1000)
fit_gaussian = pv.fit(jax.random.key(0), elbo_of(gaussian),
                      {"m": jnp.array(0.5), "log_s": jnp.array(0.0)}, optax.adam(schedule),
                      direction="maximize", num_steps=1000, progress=False)
print({name: round(float(v), 3) for name, v in fit_gaussian.params.items()})

# %% [markdown]
# ## Hierarchical VI with `pv.marginal`
#
# The family draws an auxiliary $u \sim \mathcal{N}(0, 1)$ and then $z \sim \mathcal{N}(c +
# a \tanh(3u), s)$: for $a$ large against $s$ its marginal $q(z)$ has two bumps. That marginal
# has no closed form. `pv.marginal` keeps `"z"` and treats `"u"` as auxiliary: with a reverse
# model $r(u \mid z)$ and $K$ particles it scores $z$ by
# $\log \frac1K \sum_k q(z, u_k) / r(u_k \mid z)$, an estimate whose reciprocal is unbiased,
# so the ELBO of the family stays a lower bound on $\log p(x)$. $K = 1$ is HVI; $K = M + 1$ is
# importance-weighted HVI with $M$ proposal samples. The reverse model's parameters are
# trained with the family's, by the same ELBO.

# %%
@pv.gen
def two_level(phi):
    u = pv.sample("u", dist.Normal(0.0, 1.0))
    pv.sample("z", dist.Normal(phi["c"] + phi["a"] * jnp.tanh(3.0 * u), jnp.exp(phi["log_s"])))


@pv.gen
def reverse(kept, phi):  # r(u | z)
    pv.sample("u", dist.Normal(phi["k"] * kept["z"], jnp.exp(phi["log_r"])))


def hierarchical(num_particles):
    return pv.marginal(two_level, keep=["z"], proposal=reverse, num_particles=num_particles)


start = {"a": jnp.array(0.5), "c": jnp.array(0.0), "log_s": jnp.array(-1.0),
         "k": jnp.array(0.5), "log_r": jnp.array(0.0)}
fit_hvi = pv.fit(jax.random.key(1), elbo_of(hierarchical(8)), start, optax.adam(schedule),
                 direction="maximize", num_steps=1000, progress=False)
print({name: round(float(v), 3) for name, v in fit_hvi.params.items()})

# %% [markdown]
# The same fitted family can be evaluated with more particles: the more particles, the better
# the density estimate and the tighter the bound (in expectation). Each value is the mean of
# 4000 estimates.

# %%
keys = jax.random.split(jax.random.key(2), 4000)


def expected(program, params):
    estimates = jax.jit(jax.vmap(lambda k: program.estimate(k, params)))(keys)
    return float(estimates.mean()), float(estimates.std() / jnp.sqrt(len(keys)))


rows = ["| family | particles of the density estimate | ELBO |", "|---|---|---|"]
mean, err = expected(elbo_of(gaussian), fit_gaussian.params)
rows.append(f"| Gaussian | (exact density) | {mean:.3f} ± {err:.3f} |")
for k in (1, 64):
    mean, err = expected(elbo_of(hierarchical(k)), fit_hvi.params)
    rows.append(f"| hierarchical, trained with K = 8 | {k} | {mean:.3f} ± {err:.3f} |")
rows.append(f"| (log p(x), quadrature) | | {log_evidence:.3f} |")
Markdown("\n".join(rows))

# %% [markdown]
# ## Sampling-importance-resampling with `pv.normalize`
#
# `pv.normalize(model, proposal, K, observations=...)` draws $K$ particles from the proposal,
# weighs them by $w_k = p(x, z_k) / q(z_k)$ and returns one of them with probability
# proportional to its weight. Here the proposal is the prior, which covers both modes. Its
# score is $\log p(x, z) - \log \hat Z$ with $\hat Z = \frac1K \sum_k w_k$, so its ELBO is
# $\mathbb{E}[\log \hat Z]$, the IWAE bound of the proposal, which approaches $\log p(x)$ as
# $K$ grows. Outside a program the family is simulated like any generative function, and its
# trace's score is that estimate.

# %%
@pv.gen
def prior():
    pv.sample("z", dist.Normal(0.0, 1.0))


def sir(num_particles):
    return pv.normalize(model, prior, num_particles, observations={"x": x_obs})


def sir_draw(key, family):
    """One draw of the SIR family and its ELBO estimate log p(x, z) - log p^(z) = log Z^."""
    trace = family.simulate(key)
    log_p, _ = model.assess(pv.merge(trace.choices, {"x": x_obs}))
    return trace.choices["z"], log_p - trace.score


sizes = (1, 10, 100)


@jax.jit
def sir_runs(keys):
    """For each K, 4000 draws of the SIR family and their ELBO estimates, in one compilation."""
    families = {k: sir(k) for k in sizes}
    return {k: jax.vmap(lambda key, f=f: sir_draw(key, f))(keys) for k, f in families.items()}


sir_rows = ["| K | ELBO of the SIR family |", "|---|---|"]
sir_draws = {}
for k, (draws_k, estimates) in sir_runs(keys).items():
    sir_draws[k] = draws_k
    sir_rows.append(f"| {k} | {float(estimates.mean()):.3f} ± "
                    f"{float(estimates.std() / jnp.sqrt(len(keys))):.3f} |")
sir_rows.append(f"| (log p(x), quadrature) | {log_evidence:.3f} |")
Markdown("\n".join(sir_rows))

# %% [markdown]
# ## The families against the posterior
#
# Histograms of 4000 draws from each family, over the exact posterior density.

# %%
@jax.jit
def draws(keys):
    def one(key):
        return (gaussian.simulate(key, fit_gaussian.params).choices["z"],
                two_level.simulate(key, fit_hvi.params).choices["z"])

    return jax.vmap(one)(keys)


gauss_draws, hvi_draws = draws(keys)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
panels = [
    ("fitted guides", [("Gaussian", gauss_draws), ("hierarchical (pv.marginal)", hvi_draws)]),
    ("SIR, K = 1 and K = 10", [("K = 1", sir_draws[1]), ("K = 10", sir_draws[10])]),
    ("SIR, K = 100", [("K = 100", sir_draws[100])]),
]
for ax, (title, histograms) in zip(axes, panels, strict=True):
    for label, draws in histograms:
        ax.hist(draws, bins=80, range=(-3, 3), density=True, alpha=0.5, label=label)
    ax.plot(grid, posterior, "k", lw=1.2, label="posterior")
    ax.set_xlim(-3, 3)
    ax.set_xlabel("z")
    ax.set_title(title)
    ax.legend(fontsize=8)
axes[0].set_ylabel("density")
fig.suptitle("Draws from each family and the exact posterior (x = 1.5)")
fig.tight_layout()
plt.show()

# %% [markdown]
# SIR with $K = 1$ is the proposal itself (the prior); more particles move its draws towards
# the posterior. A family built by inference is an ordinary generative function: it can be a
# guide of any objective, and `pv.forward_kl` uses `pv.normalize` to train a guide towards the
# posterior (see [Objectives](../objectives.md)).
