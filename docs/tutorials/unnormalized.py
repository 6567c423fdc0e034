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
# # Unnormalized models
#
# An energy model gives a density only up to its normalizer, $p_\theta(x) = f_\theta(x) /
# Z_\theta$. Its negative log-likelihood needs $\log Z_\theta$, and with a noise distribution
# $q$ that is the log of an expectation,
#
# $$
# \mathrm{NLL}(\theta) = -\frac1B \sum_i \log f_\theta(x_i)
# + \log \mathbb{E}_{y \sim q}\Big[\frac{f_\theta(y)}{q(y)}\Big].
# $$
#
# No finite number of draws estimates the log of an expectation, or its gradient, without
# bias. progvi writes it as a construct of its own, `pv.log_expectation(program, *args,
# estimator=...)`, and lets the estimator decide the value and the gradient. This notebook fits
# one model three ways: with the compositional estimator (`pv.compositional`, which keeps a
# running estimate of $Z$ between steps), with the plug-in estimator (`pv.plug_in`, the log
# of a $K$-sample mean), and with noise-contrastive estimation
# (`pv.unnormalized.nce`), the usual baseline. See [Unnormalized models](../unnormalized.md)
# for the details.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpyro.distributions as dist
import optax
from IPython.display import Markdown

import progvi as pv

# %% [markdown]
# ## The model, the data and the noise
#
# $\log f_\theta(x) = -\frac12 \big((x - \mu) / \sigma\big)^2$ with $\theta = (\mu, \log
# \sigma)$, so that the true normalizer is $Z_\theta = \sigma \sqrt{2\pi}$ and the fitted
# values can be checked. The data come from $\mathcal{N}(1, 0.5)$; the noise is
# $\mathcal{N}(0, 2)$, wider than the data.

# %%
xs = 1.0 + 0.5 * jax.random.normal(jax.random.key(0), (4000,))
noise = dist.Normal(0.0, 2.0)
start = {"mu": jnp.array(0.0), "log_s": jnp.array(0.0)}


def log_f(p, x):
    return -0.5 * ((x - p["mu"]) / jnp.exp(p["log_s"])) ** 2


@pv.expectation
def log_weight(p):  # one draw of log(f(y) / q(y)), y ~ q: its exponential has mean Z
    y = pv.sample("y", noise)
    return log_f(p, y) - noise.log_prob(y)


# %% [markdown]
# ## The log-partition function as a log-expectation
#
# The objective is a program over a minibatch; `pv.report` records the model's parameters and
# the estimate of $\log Z$ at every step, next to the objective.

# %%
def nll_with(estimator):
    @pv.expectation
    def nll(p, batch):
        log_z = pv.log_expectation(log_weight, p, estimator=estimator)
        pv.report("mu", p["mu"])
        pv.report("sigma", jnp.exp(p["log_s"]))
        pv.report("log_z", log_z)
        return -jnp.mean(log_f(p, batch)) + log_z

    return nll


num_steps = 3000
optimizer = optax.adam(optax.cosine_decay_schedule(2e-2, num_steps))
settings = dict(direction="minimize", data=xs, batch_size=256, num_steps=num_steps,
                progress=False)
fits = {
    "compositional": pv.fit(jax.random.key(1), nll_with(pv.compositional(gamma=0.05)), start,
                            optimizer, **settings),
    "plug-in, K = 16": pv.fit(jax.random.key(1), nll_with(pv.plug_in(16)), start, optimizer,
                              **settings),
}

# %% [markdown]
# `pv.fit` found the compositional estimator's state (its running estimate $u$ of $Z$) in the
# program and threaded it from step to step, with nothing passed by hand; the final state is
# in the result, keyed by the log-expectation's address:

# %%
print(fits["compositional"].estimator_state["log_weight"])

# %% [markdown]
# ## The NCE baseline
#
# Noise-contrastive estimation trains a classifier between data and noise points whose logit
# is the model's log density, with $\log Z$ a learned parameter. It is an ordinary objective
# to minimize inside an expectation program.

# %%
@pv.expectation
def nce_loss(p, batch):
    pv.report("mu", p["mu"])
    pv.report("sigma", jnp.exp(p["log_s"]))
    pv.report("log_z", p["log_z"])
    return pv.unnormalized.nce(lambda x: log_f(p, x) - p["log_z"], noise, batch)


fits["NCE"] = pv.fit(jax.random.key(1), nce_loss, {**start, "log_z": jnp.array(0.0)},
                     optimizer, **settings)

# %% [markdown]
# ## Results
#
# The maximum-likelihood values are the sample mean and standard deviation of the data;
# the true $\log Z$ belongs to the fitted $\sigma$ of each row.

# %%
rows = ["| method | mu | sigma | log Z (its estimate) | log Z (true, at that sigma) |",
        "|---|---|---|---|---|"]
for name, result in fits.items():
    mu, sigma = float(result.params["mu"]), float(jnp.exp(result.params["log_s"]))
    estimate = float(result.metrics["log_z"][-200:].mean())
    true = float(jnp.log(sigma * jnp.sqrt(2 * jnp.pi)))
    rows.append(f"| {name} | {mu:.3f} | {sigma:.3f} | {estimate:.3f} | {true:.3f} |")
rows.append(f"| maximum likelihood | {float(xs.mean()):.3f} | {float(xs.std()):.3f} | | |")
Markdown("\n".join(rows))

# %% [markdown]
# The log Z column is the mean of the last 200 steps' estimates. The plug-in estimator with
# $K$ draws is biased, in its value and in its gradient, by $O(1/K)$ (with very few draws it
# can drive $\sigma$ to zero and diverge); the compositional estimator draws once per step,
# and its bias vanishes as its running estimate $u$ tracks $Z_\theta$. NCE never estimates
# $Z$ from the noise: it learns $\log Z$ as a parameter.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for name, result in fits.items():
    axes[0].plot(result.metrics["mu"], lw=1, label=name)
    axes[1].plot(result.metrics["sigma"], lw=1, label=name)
for ax, target in zip(axes, (xs.mean(), xs.std()), strict=False):
    ax.axhline(float(target), color="k", ls="--", lw=1, label="maximum likelihood")
for name, color in (("compositional", "C0"), ("NCE", "C2")):
    metrics = fits[name].metrics
    axes[2].plot(metrics["log_z"], color=color, lw=0.8, label=f"{name}: its log Z")
    axes[2].plot(jnp.log(metrics["sigma"] * jnp.sqrt(2 * jnp.pi)), color=color, ls="--", lw=1,
                 label=f"{name}: true log Z at its sigma")
axes[0].set_ylim(-0.5, 2.0)
axes[1].set_ylim(0.0, 1.2)
axes[2].set_ylim(-1.5, 1.5)
for ax, label in zip(axes, ("mu", "sigma", "log Z"), strict=True):
    ax.set_xlabel("step")
    ax.set_ylabel(label)
axes[0].set_title("mu during training")
axes[1].set_title("sigma during training")
axes[2].set_title("the estimate of log Z and its true value")
axes[0].legend(fontsize=8)
axes[2].legend(fontsize=7, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# The compositional estimate of $\log Z$ is the log of a running average of one noisy draw
# per step, so it scatters; the parameters follow the maximum-likelihood values all the same,
# because what the gradient needs is the ratio $\nabla \hat w_t / u_t$, and errors in $u_t$
# average out over steps.
