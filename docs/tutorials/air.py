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
# # Attend-Infer-Repeat at a tiny size
#
# Attend-Infer-Repeat (AIR; Eslami et al. 2016) explains an image as a sum of a variable
# number of objects. At each step $t$ a presence choice $z_t \sim \mathrm{Bernoulli}(\rho_t)$
# says whether there is one more object (each one less likely a priori than the last), a
# pose $\mathrm{where}_t$ (scale and shift) places a window on the canvas, and a code
# $\mathrm{what}_t$ draws the window's content. The guide is
# a recurrent network that reads the image and proposes the same choices in the same order.
#
# The presence choices are discrete, so their gradient estimator is a real choice: REINFORCE,
# enumeration, measure-valued derivatives (MVD), or a mix. `examples/air.py` builds the model,
# the guide and eight such estimators with progvi, and [its page](../air.md) describes a full
# run. This notebook drives the same code at a size that trains in seconds: 16x16 scenes of
# zero or one digit, two steps, a few dozen updates. It shows how the pieces fit, not what
# AIR can learn.

# %%
import pathlib
import sys

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from IPython.display import Markdown

import progvi as pv

# The repository's examples/ folder (this notebook runs in docs/tutorials/).
here = pathlib.Path.cwd().resolve()
root = next(p for p in (here, *here.parents) if (p / "examples" / "air.py").is_file())
sys.path.insert(0, str(root / "examples"))
import air  # noqa: E402

# %% [markdown]
# ## Scenes
#
# The data are generated in code from scikit-learn's bundled 8x8 digits: each scene holds
# zero or one digit, scaled and pasted at a random position, and its true count is kept.

# %%
side, steps = 16, 2
cfg = air.Config(side=side, steps=steps, pres_prior=0.05)
digits = air.air_data.digit_images("digits")
scenes = air.air_data.make_scenes(digits, 64, side=side, max_objects=steps - 1, seed=0)
images = jnp.asarray(scenes.images)
none, one = np.bincount(scenes.counts, minlength=2)
print(f"{len(images)} scenes of {side}x{side} pixels: {none} without a digit, {one} with one")

fig, axes = plt.subplots(1, 8, figsize=(11, 1.9))
for i, ax in enumerate(axes):
    ax.imshow(scenes.images[i], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(f"count {scenes.counts[i]}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Training scenes (16x16 pixels) and their true counts", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The model and the guide
#
# Both are `@pv.gen` functions with one address per choice and step, `pres_t`, `where_t` and
# `what_t`; the model also samples the image `x`. The parameters are plain pytrees of arrays:
# the decoder for the model; the LSTM, its read-out and the encoder for the guide. The shapes of
# a guide trace's choices come from `jax.eval_shape`, which traces the guide without compiling
# or running it.

# %%
params = air.init_params(jax.random.key(0), cfg)
model, guide = air.make_model(cfg), air.make_guide(cfg)
shapes = jax.eval_shape(guide.simulate, jax.random.key(1), params["guide"], images[0])
for address, value in shapes.choices.items():
    print(f"{address:8} {value.dtype} {value.shape}")
print("guide parameters:", sum(leaf.size for leaf in jax.tree.leaves(params["guide"])))

# %% [markdown]
# ## The estimators
#
# The objective is `pv.elbo(model, guide, {"x": image}, ...)` for one image (or `pv.iwae`,
# `pv.rws`). Each estimator is the same program with other strategies at the presence
# addresses, set from outside by `pv.with_strategies` patterns; `where` and `what` are
# reparameterized in all of them.

# %%
objectives = {"iwae-reinforce": "IWAE, K particles", "iwae-mvd": "IWAE, K particles",
              "rws": "reweighted wake-sleep"}
in_the_program = {
    "reinforce-lb": "REINFORCE with a learned baseline (`pv.learned_baseline`), named in the guide",
    "rws": "none: wake-p and wake-q do not differentiate through the draws",
}
rows = ["| estimator | objective | strategies at the presence choices |", "|---|---|---|"]
for name, patterns in air.STRATEGIES.items():
    shown = ", ".join(f"`{pattern}`: `{strategy!r}`" for pattern, strategy in patterns.items())
    rows.append(f"| `{name}` | {objectives.get(name, 'ELBO')} | "
                f"{shown or in_the_program[name]} |")
Markdown("\n".join(rows))

# %% [markdown]
# `air.objective(name, cfg)` returns the expectation program of one image for an estimator.
# With `pv.enum` the two presence choices are summed over exactly (four branches of the rest
# of the program); here it is trained for 40 steps of 16 scenes with `pv.fit`, which vmaps the
# one-image program over each minibatch.

# %%
program = air.objective("enum", cfg)
result = pv.fit(jax.random.key(2), program, params, optax.adam(1e-3), direction="maximize",
                num_steps=40, chunk_size=40, data=images, batch_size=16, per_datapoint=True,
                progress=False)
print(f"ELBO estimate, first 10 steps: {result.history[:10].mean():.1f}, "
      f"last 10 steps: {result.history[-10:].mean():.1f} (nats per image)")

# %%
fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(result.history, marker=".", lw=1)
ax.set_xlabel("step")
ax.set_ylabel("ELBO estimate (nats per image)")
ax.set_title("AIR with enumerated presence choices: 40 steps on 16x16 scenes")
fig.tight_layout()
plt.show()

# %% [markdown]
# A few dozen steps teach the networks little; the point is the mechanics. Another estimator
# is another name (`"reinforce"`, `"mvd"`, `"hybrid"`, ...) and a compilation of its own:
# `python examples/air.py --smoke` trains every one of them on a small canvas, and the
# [AIR page](../air.md) reports a longer run with enumeration and MVD.
