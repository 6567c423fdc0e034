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
# # Choosing an estimator
#
# One objective has many unbiased gradient estimators: a strategy at each random choice
# (reparameterization, REINFORCE with or without a baseline, enumeration, measure-valued
# derivatives), a number of particles, an objective that estimates the same thing another way.
# They differ in two numbers that trade against each other: the **variance** of one estimate and
# its **time**. What matters for training is their product. Averaging the estimates that one
# second of compute buys gives a gradient whose variance is
#
# $$\frac{\sigma^2}{\text{estimates per second}} = \sigma^2 \times t,$$
#
# so an estimator ten times slower must cut the variance tenfold to pay for itself.
#
# `pv.compare_strategies` measures both on your program, at your parameters, on your machine:
# for each candidate (a mapping for `pv.with_strategies`, or a whole objective) it draws
# independent gradient estimates and reports their mean, its standard error, the variance
# (summed over the coordinates), the time per estimate and the variance × time, and, per
# top-level group of sample sites, the share of the variance that varying that group's draws
# alone leaves (the other sites held). `pv.choose_strategies` uses it to pick a strategy per
# address.
#
# This page runs on the project's examples at small sizes; every table and figure below is the
# output of the code above it, executed when the documentation was built. The times are those
# of the machine that built it, so compare the rows of one table, not tables across machines.

# %%
import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import progvi as pv

ROOT = pathlib.Path.cwd()
while not (ROOT / "examples").is_dir() and ROOT != ROOT.parent:
    ROOT = ROOT.parent
sys.path.insert(0, str(ROOT / "examples"))


def example(name):
    """Imports examples/<name>.py (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def show(table):
    display(Markdown(table.to_markdown()))

# %% [markdown]
# ## A discrete mixture: four strategies for one categorical choice
#
# `examples/discrete.py` fits a mixture of Bernoulli images to scikit-learn's 8x8 digits with a
# guide that picks the component `c` of each image. Here is the ELBO of one image at the
# example's initial parameters, with the four strategies for `c`, and with the exact gradient
# (the ELBO of one image is a sum over the components) in the `max |z|` column: the largest
# distance of a mean from it, in standard errors. REINFORCE's baseline is a constant near the
# ELBO's value.

# %%
discrete = example("discrete")
data = discrete.load_digits(seed=0).train
params = discrete.init_params(jax.random.key(0), data, components=4)
x = jnp.asarray(data[0])
elbo = discrete.elbo_program(pv.reinforce)
value = float(discrete.exact_bounds(params, x[None])[0])
exact = jax.grad(lambda p: discrete.exact_bounds(p, x[None])[0])(params)
mixture_table = pv.compare_strategies(
    jax.random.key(1), elbo, (params, x),
    {"REINFORCE": {"c": pv.reinforce},
     "REINFORCE + baseline": {"c": pv.reinforce(baseline=value)},
     "MVD": {"c": pv.mvd},
     "enumeration": {"c": pv.enum}},
    num_estimates=200, exact=exact)
show(mixture_table)

# %% [markdown]
# Enumeration is exact here (its variance is zero) and costs a few runs of the rest of the
# program; with one discrete choice of a few values it is the answer. The baseline removes most
# of REINFORCE's variance; MVD runs the rest of the program twice per draw and lands between.
# The figure draws the same numbers (log scale; the exact estimator's zero is drawn at the
# bottom of the axis).

# %%
fig = mixture_table.plot()
fig.suptitle("ELBO gradient of one image, discrete mixture (4 components)", y=1.02)
plt.show()

# %% [markdown]
# `pv.choose_strategies` makes this choice itself: given candidate strategies per address
# pattern, it runs a pilot comparison at each and keeps the lowest variance × time. Its report
# says what it picked and what the choice cost (wall time, compiling included).

# %%
program, report = pv.choose_strategies(
    jax.random.key(2), elbo, (params, x), {"c": [pv.reinforce, pv.mvd, pv.enum]},
    num_estimates=50, return_report=True)
print("picked:", report.strategies)
print(f"cost: {report.seconds:.1f} s for {len(report.tables['c'].rows)} candidates")

# %% [markdown]
# ## Gaussian mean estimation: estimators of an unnormalized model's gradient
#
# `examples/gaussian_mean.py` learns the mean of a Gaussian energy model, whose log-partition
# function must be estimated. Each candidate here is a whole objective: the negative
# log-likelihood with $\log Z$ estimated by a plug-in log-mean of K noise draws, by the
# compositional estimator (MECO, at its first step) and by the tangent bound, each with 16 noise
# draws. In this family $Z$ does not depend on $\mu$, so the exact gradient is
# $\mu - \bar x$; the `max |z|` column shows which estimators are biased at this sample size:
# the plug-in estimator of $\log Z$ is, with few draws.

# %%
gm = example("gaussian_mean")
setting = gm.Setting(dim=1, norm=2.0)
gm_data = gm.draw_data(jax.random.key(3), setting, 16)
mu = jnp.array([0.5])
theta = {"mu": mu, "b": jnp.array(0.5 * np.log(2 * np.pi))}
lr = jnp.array(1.0)
exact_mu = {"b": jnp.array(0.0), "mu": mu - gm_data.mean(0)}
nll_table = pv.compare_strategies(
    jax.random.key(4), gm.plug_in_program(16, 16), (theta, gm_data, lr),
    {"plug-in K=1": gm.plug_in_program(1, 16), "plug-in K=16": gm.plug_in_program(16, 16),
     "MECO": gm.compositional_program(16), "tangent bound": gm.tangent_program(16)},
    num_estimates=500, exact=exact_mu, per_site=False)
show(nll_table)

# %% [markdown]
# (The tangent bound also differentiates its own parameter `b`, so its gradient has an entry
# the others leave at zero; its variance counts that entry too.)
#
# ## The noisy cone: reparameterization against REINFORCE, site by site
#
# For continuous latent variables the strategy is usually reparameterization. On the noisy cone
# of `examples/cone.py`, with the Gaussian guide at its initial parameters, the ELBO's gradient
# reparameterized and by REINFORCE; the per-site column shows how each estimator's variance
# splits between the guide's two sites `x` and `y` (each fraction is the variance left when only
# that site's draws vary).

# %%
cone = example("cone")
gauss0 = cone.objectives()["ELBO"][1]


@pv.expectation
def cone_elbo(phi):
    return pv.elbo(cone.cone, cone.gaussian, cone.OBS, guide_args=(phi,))


cone_table = pv.compare_strategies(
    jax.random.key(5), cone_elbo, (gauss0,),
    {"reparam": {}, "REINFORCE": {"*": pv.reinforce}}, num_estimates=500)
show(cone_table)

# %% [markdown]
# ## AIR at a tiny size: the presence choices
#
# Attend-Infer-Repeat (`examples/air.py`, [its page](air.md)) has a discrete presence choice per
# step and continuous choices for where and what each object is. On a 12x12 canvas with at most one
# object (one presence choice), at initial parameters, `pv.choose_strategies` compares REINFORCE and
# MVD at the presence choice. It ranks them by the variance the presence draws cause with the other
# sites' draws held (the column `variance from *pres_*`): the part a presence strategy can change,
# which the continuous sites' variance would otherwise drown. Its report keeps the table it ranked
# by.

# %%
air = example("air")
cfg = air.Config(side=12, steps=1, pres_prior=0.3)
air_params = air.init_params(jax.random.key(6), cfg)
digits = air.air_data.digit_images("digits")
scenes = air.air_data.make_scenes(digits, 4, side=cfg.side, max_objects=1, seed=1)
image = jnp.asarray(scenes.images[int(np.argmax(scenes.counts))])
air_elbo = air.objective("reinforce", cfg)
air_program, air_report = pv.choose_strategies(
    jax.random.key(8), air_elbo, (air_params, image),
    {"*pres_*": {"REINFORCE": pv.reinforce, "MVD": pv.mvd}},
    num_estimates=32, return_report=True)
show(air_report.tables["*pres_*"])
print("picked:", air_report.strategies)
print(f"cost: {air_report.seconds:.1f} s")

# %% [markdown]
# Whether MVD's lower variance is worth its time depends on the machine: on a CPU, its extra
# runs of the rest of the program are paid in full. And 32 pilot estimates measure a variance
# only roughly: a ratio near 1 between the two rows is no verdict.

# %% [markdown]
# ## What the choice is, and is not
#
# `pv.choose_strategies` is a heuristic. It visits the patterns in the order given and keeps the
# best candidate at each with the earlier choices fixed; it does not search combinations. Its
# numbers hold at the pilot parameters: variances move as training moves the parameters (a
# REINFORCE baseline that fits at the start may not fit later), so choose again after the first
# part of a fit if it matters. And its cost, one or two compilations and a few hundred
# estimates per candidate, is worth paying when a fit runs for thousands of steps, not for a
# short one.
