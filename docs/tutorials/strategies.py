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
# # Strategies, and choosing among them
#
# The gradient of an expectation program is estimated site by site: each `pv.sample` has a
# *strategy*, the rule that turns its random choice into a term of the derivative. All of
# them are unbiased; they differ in variance and in cost. This notebook applies each of
# progvi's strategies to one small program whose exact gradient is known, then measures them
# with `pv.compare_strategies` and lets `pv.choose_strategies` pick one per address.
#
# | strategy | for | how it differentiates a draw |
# |---|---|---|
# | `pv.reparam` | reparameterized samplers | through the sampler's path |
# | `pv.reinforce` | any distribution | score function × the rest of the program |
# | `pv.enum` | finite supports | the rest of the program summed over every value |
# | `pv.mvd` | Bernoulli, Categorical, Normal, ... | the rest of the program at two coupled draws |
# | `pv.leave_one_out(num_samples=K)` | any distribution | K draws, each scored against the others |

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpyro.distributions as dist
import optax
from IPython.display import Markdown, display

import progvi as pv

# %% [markdown]
# ## A program with a continuous and a discrete choice
#
# $z \sim \mathcal{N}(\mu, 1)$ and $b \sim \mathrm{Bernoulli}(\sigma(\theta))$; the value is
# $(z - 1)^2$ when $b = 1$ and $(z + 1)^2$ when $b = 0$. With $p = \sigma(\theta)$ its
# expectation is $p\,((\mu - 1)^2 + 1) + (1 - p)\,((\mu + 1)^2 + 1)$, whose gradient JAX
# computes exactly. By default `z` is reparameterized (a Normal has a reparameterized
# sampler) and `b` is estimated by REINFORCE.

# %%
@pv.expectation
def objective(params):
    z = pv.sample("z", dist.Normal(params["mu"], 1.0))
    b = pv.sample("b", dist.Bernoulli(logits=params["theta"]))
    return jnp.where(b > 0, (z - 1.0) ** 2, (z + 1.0) ** 2)


def expected(params):
    p = jax.nn.sigmoid(params["theta"])
    mu = params["mu"]
    return p * ((mu - 1.0) ** 2 + 1.0) + (1.0 - p) * ((mu + 1.0) ** 2 + 1.0)


params = {"mu": jnp.array(0.5), "theta": jnp.array(0.3)}
exact = jax.grad(expected)(params)
print("exact gradient:", {name: round(float(g), 4) for name, g in exact.items()})

# %% [markdown]
# ## The same program, other estimators
#
# `pv.with_strategies(program, {pattern: strategy})` returns the program with other strategies
# at the matching addresses, without touching its code; a pattern may glob (`"enc/*"`, `"*"`).
# These are the candidates compared below, as `pv.compare_strategies` takes them: a mapping
# for `pv.with_strategies`, or a whole program.

# %%
candidates = {
    "default (reparam z, REINFORCE b)": objective,
    "enumerate b": {"b": pv.enum},
    "MVD at b": {"b": pv.mvd},
    "leave-one-out at b, 4 draws": {"b": pv.leave_one_out(num_samples=4)},
}
one_estimate = pv.with_strategies(objective, {"b": pv.mvd}).grad(jax.random.key(0), params)
print("one MVD estimate:", {name: round(float(g), 4) for name, g in one_estimate.items()})

# %% [markdown]
# ## Measuring them: `pv.compare_strategies`
#
# A lower variance is not the whole story: enumeration and MVD run the rest of the program
# more than once, and leave-one-out draws several times. What matters when training is the
# variance of the gradient that a fixed amount of compute buys, which is the variance of one
# estimate times its time. `pv.compare_strategies` measures both on this machine from 1000
# estimates per candidate, and checks each mean against the exact gradient (`max |z|`, the
# largest deviation in standard errors). The times are those of the machine that built this
# page, so the ranking may differ elsewhere. (`per_site=False` skips the split of the variance
# by site, shown further down, which costs two more compilations per candidate.)

# %%
table = pv.compare_strategies(jax.random.key(1), objective, (params,), candidates,
                              num_estimates=1000, exact=exact, per_site=False)
display(Markdown(str(table)))
print("lowest variance x time:", table.best)

# %% [markdown]
# `table.plot()` draws the same two columns as bars on log scales; given a pair of axes it
# draws on them. These values lie within a decade, where linear scales read better.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
table.plot(ax=axes)
for ax in axes:
    ax.set_xscale("linear")
    ax.set_xlim(left=0.0)
fig.suptitle("Gradient estimators of one program")
fig.tight_layout()
plt.show()

# %% [markdown]
# Each row is also an object (`table.rows`, or `table[name]`) with the gradient's mean,
# standard error and variance per parameter. Every candidate is unbiased: its mean is the
# exact gradient up to its standard error.

# %%
rows = ["| candidate | d/dmu | d/dtheta |", "|---|---|---|"]
for row in table.rows:
    rows.append(f"| {row.name} | {float(row.mean['mu']):.3f} ± {float(row.stderr['mu']):.3f} | "
                f"{float(row.mean['theta']):.3f} ± {float(row.stderr['theta']):.3f} |")
rows.append(f"| exact | {float(exact['mu']):.3f} | {float(exact['theta']):.3f} |")
Markdown("\n".join(rows))

# %% [markdown]
# ## Where the variance comes from
#
# With `per_site=True` (the default) each row also says, for each site, the fraction of the
# variance that remains when only that site's draws vary and the other site's are held
# fixed (a total-effect index: the fractions add up to 1 only when the sites' effects add).
# Enumerating `b` leaves only the part that comes from `z`.

# %%
by_site = pv.compare_strategies(jax.random.key(4), objective, (params,),
                                {"default": objective}, num_estimates=1000)
print("default program, variance by site:",
      {site: round(fraction, 2) for site, fraction in by_site["default"].sites.items()})

# %% [markdown]
# ## Choosing automatically: `pv.choose_strategies`
#
# Given candidate strategies per address pattern, `pv.choose_strategies` runs pilot estimates
# at the given parameters and keeps, pattern by pattern, the candidate with the lowest
# variance × time; it returns the program with that choice. It is a heuristic (greedy, one
# pattern at a time, local to the parameters it was given): rerun it if training moves them
# far.

# %%
program, report = pv.choose_strategies(jax.random.key(2), objective, (params,),
                                       {"b": [pv.reinforce, pv.mvd, pv.enum]},
                                       num_estimates=200, return_report=True)
print("chosen:", report.strategies)
print(f"the choice took {report.seconds:.1f} s, compilation included")

# %% [markdown]
# The chosen program is an ordinary expectation program: train it like any other.

# %%
result = pv.fit(jax.random.key(3), program, params, optax.adam(0.05), direction="minimize",
                num_steps=300, progress=False)
print("fitted:", {name: round(float(v), 3) for name, v in result.params.items()},
      f"objective {float(expected(result.params)):.4f}")

# %% [markdown]
# [Choosing an estimator](../choosing.py) runs the same comparisons on the project's examples:
# a discrete mixture, an unnormalized model, the noisy cone and AIR.
