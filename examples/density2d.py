"""2-D energy models: NCE, plug-in and compositional likelihood, with fixed or learned noise.

Four densities are made in code with a fixed seed: two rings (`sklearn.datasets.make_circles`),
two moons (`sklearn.datasets.make_moons`), a checkerboard and eight Gaussians on a circle. Each is
fitted by an energy model

    log f(x) = -E(x) - |x|^2 / (2 * 4^2),    E a 2-64-64-1 MLP with swish units,

whose quadratic term, a fixed base measure N(0, 4^2 I), keeps f integrable whatever the MLP does
(an MLP grows at most linearly). The last layer starts at zero, so every method starts from the
same model, the base Gaussian itself. The energy is trained by five methods, all at the same cost
of K noise draws per step (K = `--noise-draws`, 64) and batches of B data points:

======================================  ======================================================
NCE                                     `pv.unnormalized.nce` with the fixed noise,
                                        noise ratio K / B, log Z a learned parameter
plug-in                                 `pv.unnormalized.nll` with `pv.plug_in(num_samples=K)`
compositional                           `pv.unnormalized.nll` with `pv.compositional(gamma,
                                        num_samples=K)` (MECO)
compositional, learned Gaussian         the same with a learned noise: K/2 draws for log Z, K/2
                                        for the noise's own loss (``noise_loss="variance"``)
compositional, learned mixture          the same with a learned mixture noise
                                        (``noise_loss="forward_kl"``)
compositional, learned flow             the same with a learned normalizing flow noise (TFP
                                        bijectors: RealNVP couplings, then an affine map that
                                        starts at the covering Gaussian;
                                        ``noise_loss="forward_kl"``)
======================================  ======================================================

The fixed noise is a Gaussian N(mean, s^2 I) that covers the data (s = 1.25 times the data's
root-mean-square standard deviation). The learned noises are a diagonal Gaussian, trained by
reparameterization to minimize log E_q[(f/q)^2] (the variance of the inner estimate), and a
mixture of eight diagonal Gaussians plus a fixed 10% of the covering Gaussian (a defensive
component that keeps f/q bounded where the mixture is thin), trained towards the model by
forward KL; the mixture has no reparameterized sampler, so its draws take REINFORCE with a
moving-average baseline (`pv.with_strategies`). `noises()` lists the noise choices by name: a
normalizing flow is one more entry there.

Evaluation: the held-out log-likelihood (nats per point) of each fitted model, the held-out mean
of log f minus log Z, with log Z estimated by importance sampling from 200 000 draws of a wide
fixed proposal N(0, 4^2 I) (a logsumexp). Its standard error is the delta method's: the held-out
variance of log f over the number of points, plus the variance of the importance weights over
(draws * mean weight^2). The row "true density" scores the held-out points under the density the
data were drawn from (mixtures of Gaussians along the curves, exact up to quadrature over their
angles; the checkerboard is uniform on its squares). A second table shows what the learned
noises buy: the effective sample size of the weights f/q of the inner estimate at the end of
training (in % of the draws), each model under its own noise and under the fixed one. The figures:
`density2d.png` (a row per density: the data and each fitted density), `density2d_noise.png`
(the noises over the data, and the distribution of the inner log-weights).

What it shows (8000 steps, gamma = 0.5, chosen from {0.02, 0.1, 0.3, 0.6} on the moons and the
eight Gaussians at 4000 steps, where gamma = 0.1 lagged behind plug-in): every method gets within
0.1 nats (most within 0.05) of the true density on the rings, moons and eight Gaussians, and about
0.3 nats short on the checkerboard, whose sharp edges a smooth MLP rounds off; the differences
between methods are mostly below 0.05 nats, about the spread between training seeds (seeds 0
and 1 differ by up to 0.08; the standard errors cover the evaluation only, not the randomness of
training). Compositional beats plug-in on the checkerboard by 0.02-0.05 in both seeds. The learned
mixture doubles or triples the effective sample size of the inner estimate (moons, checkerboard,
eight Gaussians), but it spends half of the draws on its own loss: 32 draws at 33% ESS are
about as many effective draws as 64 at 12%, and the held-out likelihood does not move. The
learned Gaussian buys next to nothing (on the moons it is the worst method in both seeds).

    python examples/density2d.py            # about three minutes on 2 busy CPU cores
    python examples/density2d.py --smoke    # one density, 300 steps: the test's size; its
                                            # time goes to compiling the five programs

Needs matplotlib and scikit-learn, and TensorFlow Probability on JAX for the flow:
``pip install "progvi[examples]"``.

References:
  Jiang, Qin, Wu, Chen, Yang & Zhang, "Learning Unnormalized Statistical Models via
  Compositional Optimization", ICML 2023.
  Gutmann & Hyvärinen, "Noise-contrastive estimation: A new estimation principle for
  unnormalized statistical models", AISTATS 2010.
  Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, "FFJORD: Free-form Continuous Dynamics
  for Scalable Reversible Generative Models", ICLR 2019 (the checkerboard and eight Gaussians).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv

BASE_SCALE = 4.0  # the model's base measure N(0, BASE_SCALE^2 I), also the evaluation proposal
LIMIT = 4.0  # the plots show [-LIMIT, LIMIT]^2


def require(module: str):
    """Imports an optional dependency of the examples, or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ModuleNotFoundError(
            f'examples/density2d.py needs {module.split(".")[0]}: pip install "progvi[examples]"'
        ) from error


# -- the densities --------------------------------------------------------------------------------


class Density(NamedTuple):
    sample: Callable[[int, int], np.ndarray]  # (num, seed) -> (num, 2) float32 points
    log_prob: Callable[[np.ndarray], np.ndarray]  # (n, 2) -> (n,): the density drawn from


def _curve_mixture(centres: np.ndarray, scale: float):
    """log p of the uniform mixture of N(c, scale^2 I) over the rows of `centres`."""

    def log_prob(x):
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        log_n = -d2 / (2 * scale**2) - math.log(2 * math.pi * scale**2)
        top = log_n.max(1, keepdims=True)
        return (top[:, 0] + np.log(np.exp(log_n - top).mean(1))).astype(np.float64)

    return log_prob


# Two rings: make_circles places n/2 points evenly on each circle (radius 1 and FACTOR) and adds
# N(0, NOISE^2 I); scaled by SCALE. The density is the mixture over the angle, here on a grid of
# 2000 angles per circle (spacing 0.01, against a noise of 0.15).
RINGS = {"factor": 0.5, "noise": 0.05, "scale": 3.0}
# Two moons: half circles of radius 1 (make_moons), centred and scaled by 1.7.
MOONS = {"noise": 0.05, "scale": 1.7, "shift": np.array([0.5, 0.25])}


def rings(num, seed):
    from sklearn.datasets import make_circles

    x, _ = make_circles(num, factor=RINGS["factor"], noise=RINGS["noise"], random_state=seed)
    return (RINGS["scale"] * x).astype(np.float32)


def moons(num, seed):
    from sklearn.datasets import make_moons

    x, _ = make_moons(num, noise=MOONS["noise"], random_state=seed)
    return (MOONS["scale"] * (x - MOONS["shift"])).astype(np.float32)


def checkerboard(num, seed):
    """Uniform on the 8 dark squares (side 1.5) of a 4 x 4 board on [-3, 3]^2."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-2, 2, num)
    x2 = rng.uniform(0, 1, num) - 2 * rng.integers(0, 2, num) + np.floor(x1) % 2
    return (1.5 * np.stack([x1, x2], 1)).astype(np.float32)


def checkerboard_log_prob(x):
    u = x / 1.5
    inside = np.all(np.abs(u) <= 2, 1) & ((np.floor(u[:, 0]) + np.floor(u[:, 1])) % 2 == 0)
    return np.where(inside, -math.log(8 * 1.5**2), -np.inf)


EIGHT = {"radius": 2 * math.sqrt(2), "scale": 0.5 / math.sqrt(2)}


def eight_centres():
    angles = 2 * np.pi * np.arange(8) / 8
    return EIGHT["radius"] * np.stack([np.cos(angles), np.sin(angles)], 1)


def eight_gaussians(num, seed):
    rng = np.random.default_rng(seed)
    centres = eight_centres()[rng.integers(0, 8, num)]
    return (centres + EIGHT["scale"] * rng.normal(size=(num, 2))).astype(np.float32)


def _ring_centres():
    t = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    return RINGS["scale"] * np.concatenate([circle, RINGS["factor"] * circle])


def _moon_centres():
    t = np.linspace(0, np.pi, 2000)
    outer = np.stack([np.cos(t), np.sin(t)], 1)
    inner = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
    return MOONS["scale"] * (np.concatenate([outer, inner]) - MOONS["shift"])


def densities() -> dict[str, Density]:
    return {
        "rings": Density(rings, _curve_mixture(_ring_centres(), RINGS["scale"] * RINGS["noise"])),
        "moons": Density(moons, _curve_mixture(_moon_centres(), MOONS["scale"] * MOONS["noise"])),
        "checkerboard": Density(checkerboard, checkerboard_log_prob),
        "8 gaussians": Density(eight_gaussians, _curve_mixture(eight_centres(), EIGHT["scale"])),
    }


# -- the energy model -----------------------------------------------------------------------------


def init_energy(key, hidden=(64, 64)):
    """An MLP 2 -> hidden -> 1 as a list of {"w", "b"} layers; the last layer starts at zero."""
    sizes = (2, *hidden, 1)
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        w = jnp.zeros((fan_in, fan_out)) if last else (
            jax.random.normal(k, (fan_in, fan_out)) / math.sqrt(fan_in))
        layers.append({"w": w, "b": jnp.zeros(fan_out)})
    return layers


def log_f(x, energy):
    """The model's unnormalized log density at points of shape (n, 2): shape (n,)."""
    h = x
    for layer in energy[:-1]:
        h = jax.nn.swish(h @ layer["w"] + layer["b"])
    e = (h @ energy[-1]["w"] + energy[-1]["b"])[..., 0]
    return -e - 0.5 * jnp.sum(x**2, -1) / BASE_SCALE**2


INITIAL_LOG_Z = math.log(2 * math.pi * BASE_SCALE**2)  # of the initial model, the base Gaussian


# -- the noises -----------------------------------------------------------------------------------


class Noise(NamedTuple):
    """A noise q for the log-partition estimate: its parameters, its distribution, its training."""

    init: Callable[[Any, Any], Any]  # (key, cover) -> its params (None if fixed)
    distribution: Callable[[Any, Any], Any]  # (params, cover) -> q, a numpyro distribution
    loss: str | None  # None (fixed), "variance" or "forward_kl": nll's noise_loss
    strategies: dict  # strategy overrides for its draws, by address pattern (pv.with_strategies)


def cover(data) -> dict:
    """The fixed noise's parameters: N(mean, s^2 I), s = 1.25 x the RMS standard deviation."""
    data = jnp.asarray(data)
    return {"loc": data.mean(0), "log_scale": jnp.log(1.25 * jnp.sqrt(data.var(0).mean()))}


def gaussian(params):
    scale = jnp.exp(params["log_scale"]) * jnp.ones(2)
    return dist.Normal(params["loc"], scale).to_event(1)


def mixture(params, covering, defensive: float = 0.1):
    """The learned mixture, plus the covering Gaussian (held fixed) with weight `defensive`."""
    fixed = jax.tree.map(jax.lax.stop_gradient, covering)
    logits = jnp.concatenate([math.log(1 - defensive) + jax.nn.log_softmax(params["logits"]),
                              jnp.full(1, math.log(defensive))])
    loc = jnp.concatenate([params["loc"], fixed["loc"][None]])
    scale = jnp.exp(jnp.concatenate([params["log_scale"],
                                     jnp.full((1, 2), fixed["log_scale"])]))
    return dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                  dist.Normal(loc, scale).to_event(1))


def init_mixture(key, covering, num_components):
    """Components around random points of the covering Gaussian, each as wide as half of it."""
    scale = jnp.exp(covering["log_scale"])
    loc = covering["loc"] + 0.5 * scale * jax.random.normal(key, (num_components, 2))
    return {"logits": jnp.zeros(num_components), "loc": loc,
            "log_scale": jnp.full((num_components, 2), covering["log_scale"] + math.log(0.5))}


def coupling(w):
    """A RealNVP shift-and-log-scale network that closes over its weights, as TFP writes it."""

    def fn(x, output_units, **kwargs):
        h = jax.nn.swish(x @ w["w1"] + w["b1"])
        out = h @ w["w2"] + w["b2"]
        return out[..., :output_units], jnp.tanh(out[..., output_units:])

    return fn


def flow(params, covering):
    """The learned flow: RealNVP couplings of a standard normal, then a learned affine map.

    Built from its parameters where it is used, inside the program; `pv.interop.tfp` makes it a
    numpyro distribution, a pytree that `inner_weights` can take as a jitted argument.
    """
    tfp = require("tensorflow_probability.substrates.jax")
    tfd, tfb = tfp.distributions, tfp.bijectors
    layers = [tfb.Shift(params["loc"]), tfb.Scale(jnp.exp(params["log_scale"]))]
    for w in params["couplings"]:
        layers += [tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=coupling(w)),
                   tfb.Permute([1, 0])]
    base = tfd.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    return pv.interop.tfp(tfd.TransformedDistribution(base, tfb.Chain(layers)))


def init_flow(key, covering, num_couplings: int = 2, hidden: int = 16):
    """The covering Gaussian, and couplings whose last layer is zero (identity maps at first)."""
    couplings = [{"w1": jax.random.normal(k, (1, hidden)), "b1": jnp.zeros(hidden),
                  "w2": jnp.zeros((hidden, 2)), "b2": jnp.zeros(2)}
                 for k in jax.random.split(key, num_couplings)]
    return {"loc": covering["loc"], "log_scale": covering["log_scale"] * jnp.ones(2),
            "couplings": couplings}


def noises(num_components: int = 8) -> dict[str, Noise]:
    """The noise choices by name. The first is fixed; a learned one gets a row of its own.

    A new choice is one more entry: parameters from the covering Gaussian, a numpyro
    distribution (or a TFP one through `pv.interop.tfp`, as the flow's `TransformedDistribution`
    is: it has an exact density, so ``loss="forward_kl"`` trains it, and a reparameterized
    sampler, so ``loss="variance"`` could) and its loss.
    """
    # The mixture's component choice has no reparameterized sampler: its draws take REINFORCE.
    # Their score multiplies the whole NLL (which does not depend on them: a mean-zero term), so a
    # moving-average baseline of the NLL removes most of that noise.
    baseline = pv.reinforce(baseline=pv.train.moving_average_baseline(0.9))
    return {
        "fixed Gaussian": Noise(lambda key, c: None, lambda p, c: gaussian(c), None, {}),
        "learned Gaussian": Noise(lambda key, c: dict(c, log_scale=c["log_scale"] * jnp.ones(2)),
                                  lambda p, c: gaussian(p), "variance", {}),
        "learned mixture": Noise(lambda key, c: init_mixture(key, c, num_components), mixture,
                                 "forward_kl", {"log_z_noise/y": baseline}),
        # Forward KL covers the model's mass; "variance" let the flow's tails go thin, where
        # f/q blows up and the model with it.
        "learned flow": Noise(init_flow, flow, "forward_kl", {}),
    }


# -- the methods ----------------------------------------------------------------------------------


class Method(NamedTuple):
    program: pv.Expectation  # loss(params, batch, cover): minimized by pv.fit
    noise: str  # the name of the noise it trains with, in noises()
    init: Callable[[Any, Any, Any], dict]  # (key, energy, cover) -> its params


def nce_program(noise: Noise, noise_ratio: float) -> pv.Expectation:
    @pv.expectation
    def nce(params, batch, covering):
        log_model = lambda x: log_f(x, params["energy"]) - params["log_z"]
        return pv.unnormalized.nce(log_model, noise.distribution(None, covering), batch,
                                   noise_ratio=noise_ratio)

    return nce


def nll_program(noise: Noise, estimator, noise_samples: int = 64) -> pv.Expectation:
    @pv.expectation
    def nll(params, batch, covering):
        q = noise.distribution(params.get("noise"), covering)
        return pv.unnormalized.nll(log_f, batch, q, model_args=(params["energy"],),
                                   estimator=estimator, noise_loss=noise.loss,
                                   noise_samples=noise_samples)

    return pv.with_strategies(nll, noise.strategies) if noise.strategies else nll


def methods(choices: dict[str, Noise], noise_draws: int, batch_size: int,
            gamma: float) -> dict[str, Method]:
    """Every method at the same cost: `noise_draws` draws of its noise per step."""
    fixed_name = next(iter(choices))
    fixed = choices[fixed_name]
    energy_only = lambda key, energy, covering: {"energy": energy}
    rows = {
        "NCE": Method(nce_program(fixed, noise_draws / batch_size), fixed_name,
                      lambda key, energy, covering: {"energy": energy,
                                                     "log_z": jnp.asarray(INITIAL_LOG_Z)}),
        "plug-in": Method(nll_program(fixed, pv.plug_in(num_samples=noise_draws)), fixed_name,
                          energy_only),
        "compositional": Method(
            nll_program(fixed, pv.compositional(gamma, num_samples=noise_draws)), fixed_name,
            energy_only),
    }
    half = noise_draws // 2  # a learned noise spends half of the draws on its own loss
    for name, noise in choices.items():
        if noise.loss is None:
            continue
        program = nll_program(noise, pv.compositional(gamma, num_samples=half),
                              noise_samples=half)
        rows[f"compositional, {name}"] = Method(
            program, name,
            lambda key, energy, covering, noise=noise: {"energy": energy,
                                                        "noise": noise.init(key, covering)})
    return rows


# -- evaluation -----------------------------------------------------------------------------------


@jax.jit
def held_out(energy, test, proposal_draws):
    """Held-out log-likelihood by importance sampling, its standard error, and the IS ESS.

    log Z = logsumexp(log f(y_m) - log r(y_m)) - log M over draws y_m of the proposal r; by the
    delta method Var[log Ẑ] = Var[w] / (M mean(w)^2), independent of the held-out term's
    Var[log f(x)] / n.
    """
    r = dist.Normal(jnp.zeros(2), BASE_SCALE).to_event(1)
    log_w = log_f(proposal_draws, energy) - r.log_prob(proposal_draws)
    num = log_w.shape[0]
    log_z = jax.nn.logsumexp(log_w) - math.log(num)
    w = jnp.exp(log_w - log_z)  # weights over their mean
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    var_log_z = jnp.var(w) / num
    log_f_test = log_f(test, energy)
    var_test = jnp.var(log_f_test) / test.shape[0]
    return {"ll": jnp.mean(log_f_test) - log_z, "se": jnp.sqrt(var_test + var_log_z),
            "se_log_z": jnp.sqrt(var_log_z), "log_z": log_z, "ess": ess / num}


@functools.partial(jax.jit, static_argnames="num")
def inner_weights(key, energy, q, num, grid):
    """The inner estimate's log-weights log f(y) - log q(y) at `num` draws y ~ q; log q on `grid`.

    `q` is a numpyro distribution, a pytree: one compilation per kind of noise.
    """
    ys = q.sample(key, (num,))
    return log_f(ys, energy) - q.log_prob(ys), q.log_prob(grid)


def ess_fraction(log_w) -> float:
    w = np.exp(np.asarray(log_w, np.float64) - np.max(log_w))
    return float(w.sum() ** 2 / (w**2).sum() / len(w))


@jax.jit
def density_grid(energy, log_z, grid_points):
    """The fitted density exp(log f - log Z) at the points of the plots' grid."""
    return jnp.exp(log_f(grid_points, energy) - log_z)


# -- the pictures ---------------------------------------------------------------------------------


def _pyplot():
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_densities(path, datasets, grids, table, axis):
    plt = _pyplot()
    names = list(next(iter(grids.values())))
    rows, cols = len(datasets), 1 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.45 * rows + 0.5), squeeze=False,
                             layout="constrained")
    extent = (axis[0], axis[-1], axis[0], axis[-1])
    for i, (density, data) in enumerate(datasets.items()):
        panels = [("data", None)] + [(m, grids[density][m]) for m in names]
        for j, (title, grid) in enumerate(panels):
            ax = axes[i, j]
            if grid is None:
                ax.hist2d(data[:, 0], data[:, 1], bins=100, range=[axis[[0, -1]]] * 2,
                          cmap="viridis")
                ax.set_title(f"{density}: data", fontsize=8)
            else:
                ax.imshow(grid.reshape(len(axis), len(axis)), origin="lower", extent=extent,
                          cmap="viridis")
                row = table[title][density]
                ax.set_title(f"{title}\n{row['ll']:.3f} ± {row['se']:.3f} nats", fontsize=8)
            ax.set_xlim(axis[0], axis[-1])
            ax.set_ylim(axis[0], axis[-1])
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
            ax.set_xlabel("$x_1$", fontsize=7, labelpad=1)
            ax.set_ylabel("$x_2$", fontsize=7, labelpad=1)
    fig.suptitle("energy models of 2-D densities: held-out log-likelihood (mean ± s.e.) over "
                 "each fitted density", fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_noises(path, datasets, noise_views, axis):
    """Per density: the data with each noise's density contours; the inner log-weights."""
    plt = _pyplot()
    rows = len(datasets)
    fig, axes = plt.subplots(rows, 2, figsize=(10.0, 3.6 * rows + 0.4), squeeze=False,
                             layout="constrained")
    x1, x2 = np.meshgrid(axis, axis)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (density, data) in enumerate(datasets.items()):
        left, right = axes[i]
        left.scatter(data[:2000, 0], data[:2000, 1], s=1, c="0.6", alpha=0.5)
        for c, (label, view) in zip(colours, noise_views[density].items(), strict=False):
            log_q = np.asarray(view["log_q"]).reshape(x1.shape)
            top = log_q.max()
            # Contours at 1/4 and 1/20 of the noise's peak density.
            left.contour(x1, x2, log_q, levels=[top - math.log(20), top - math.log(4)],
                         colors=[c], linewidths=[0.8, 1.4], linestyles="solid")
            left.plot([], [], c=c, label=label)
            log_w = view["log_w"]
            relative = log_w - log_w.max() - np.log(np.mean(np.exp(log_w - log_w.max())))
            right.hist(np.clip(relative, -20, None), bins=np.linspace(-20, 4, 97),
                       histtype="step", color=c, density=True,
                       label=f"{label}: ESS {100 * view['ess']:.1f}%")
        left.set_xlim(axis[0], axis[-1])
        left.set_ylim(axis[0], axis[-1])
        left.set_aspect("equal")
        left.set_xlabel("$x_1$")
        left.set_ylabel("$x_2$")
        left.set_title(f"{density}: the noises over the data", fontsize=9)
        left.legend(fontsize=6, loc="upper right", framealpha=0.8)
        right.set_xlabel("log f(y) - log q(y) - log Z, y ~ q (below -20: at -20)")
        right.set_ylabel("density")
        right.set_yscale("log")
        right.set_title(f"{density}: inner log-weights at the end", fontsize=9)
        right.legend(fontsize=7, loc="upper left")
    fig.suptitle("what the learned noises buy. Left: each noise's contours at 1/4 (thick) and "
                 "1/20 (thin) of its peak density;\nright: the spread of the weights f/q of the "
                 "inner estimate, each model under its own noise", fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", nargs="+", default=None,
                        help=f"a subset of {list(densities())} (default: all)")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--noise-draws", type=int, default=64,
                        help="noise draws per step, the same for every method (K)")
    parser.add_argument("--gamma", type=float, default=0.5,
                        help="the compositional estimator's rate")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-test", type=int, default=10000)
    parser.add_argument("--eval-draws", type=int, default=200_000,
                        help="proposal draws of the importance-sampled log Z")
    parser.add_argument("--ess-draws", type=int, default=20000,
                        help="noise draws of the effective sample sizes at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run (seconds): one density, few steps; for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.densities = args.densities or ["moons"]
        args.steps, args.num_train, args.num_test = 300, 4000, 2000
    args.densities = args.densities or list(densities())
    unknown = sorted(set(args.densities) - set(densities()))
    if unknown:
        parser.error(f"--densities: unknown {unknown}; choose from {list(densities())}")
    if args.noise_draws < 4 or args.noise_draws % 2:
        parser.error(f"--noise-draws {args.noise_draws}: it must be even and at least 4 (a "
                     "learned noise spends half of them on its own loss)")
    return args


def fit_density(args, density, rows, choices, optimizer, energy0, proposal_draws, grid_points):
    """Fits every method on one density; returns its data and the numbers and pictures."""
    index = list(densities()).index(density)  # seeds follow the density, not the run's list
    key = jax.random.fold_in(jax.random.key(args.seed), index)
    k_fit, k_noise, k_inner = jax.random.split(key, 3)
    spec = densities()[density]
    points = spec.sample(args.num_train + args.num_test, args.seed * 100 + index)
    train, test = jnp.asarray(points[: args.num_train]), jnp.asarray(points[args.num_train:])
    covering = cover(train)
    log_p = spec.log_prob(np.asarray(test, np.float64))
    out = {
        "data": np.asarray(train),
        "initial": {k: float(v) for k, v in held_out(energy0, test, proposal_draws).items()},
        "truth": {"ll": float(log_p.mean()), "se": float(log_p.std() / math.sqrt(len(log_p)))},
        "rows": {}, "grids": {}, "noise": {}, "views": {},
    }
    fitted = {}
    for m, (name, method) in enumerate(rows.items()):
        method.program.__name__ = f"{density}: {name}"  # what the progress bar of its fit shows
        params0 = method.init(k_noise, energy0, covering)
        result = pv.fit(jax.random.fold_in(k_fit, m), method.program, params0, optimizer,
                        direction="minimize", data=train, batch_size=args.batch_size,
                        num_steps=args.steps, extra_args=(covering,),
                        progress=not args.no_progress)
        energy = result.params["energy"]
        row = {k: float(v) for k, v in held_out(energy, test, proposal_draws).items()}
        if "log_z" in result.params:
            row["learned_log_z"] = float(result.params["log_z"])
        out["rows"][name] = row
        out["grids"][name] = np.asarray(density_grid(energy, row["log_z"], grid_points))
        fitted[name] = result.params
    # The inner estimate's weights f/q at the end, for the likelihood methods whose inner
    # estimate keeps a state: each model under its own noise, and under the fixed noise (the same
    # model, only q changes).
    fixed_q = gaussian(covering)
    for m, (name, method) in enumerate(rows.items()):
        if not name.startswith("compositional"):
            continue
        noise = choices[method.noise]
        own_q = noise.distribution(fitted[name].get("noise"), covering)
        k = jax.random.fold_in(k_inner, m)
        log_w, log_q = inner_weights(k, fitted[name]["energy"], own_q, args.ess_draws,
                                     grid_points)
        log_w_fixed, _ = inner_weights(k, fitted[name]["energy"], fixed_q, args.ess_draws,
                                       grid_points)
        out["noise"][name] = {"ess": ess_fraction(log_w), "ess_fixed": ess_fraction(log_w_fixed)}
        label = method.noise if noise.loss is None else f"{method.noise} (its model)"
        out["views"][label] = {"log_q": np.asarray(log_q), "log_w": np.asarray(log_w),
                               "ess": out["noise"][name]["ess"]}
    return out


def main(argv=None) -> dict:
    """Fits every method on every density, prints the tables, writes the PNGs."""
    args = parse_args(argv)
    require("sklearn")
    require("tensorflow_probability.substrates.jax")
    require("matplotlib")
    start = time.perf_counter()
    choices = noises()
    rows = methods(choices, args.noise_draws, args.batch_size, args.gamma)
    # One optimizer object and data of one shape for every density: each method's program
    # compiles once and its compiled chunks are reused for the other densities.
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.02))
    k_init, k_eval = jax.random.split(jax.random.key(args.seed))
    proposal_draws = BASE_SCALE * jax.random.normal(k_eval, (args.eval_draws, 2))
    energy0 = init_energy(k_init)
    axis = np.linspace(-LIMIT, LIMIT, 161)
    x1, x2 = np.meshgrid(axis, axis)
    grid_points = jnp.asarray(np.stack([x1.ravel(), x2.ravel()], 1), jnp.float32)
    results = {d: fit_density(args, d, rows, choices, optimizer, energy0, proposal_draws,
                              grid_points) for d in args.densities}
    seconds = time.perf_counter() - start

    table = {name: {d: r["rows"][name] for d, r in results.items()} for name in rows}
    noise_table = {d: r["noise"] for d, r in results.items()}
    initial = {d: r["initial"] for d, r in results.items()}
    truth = {d: r["truth"] for d, r in results.items()}
    report(args, table, initial, truth, noise_table, rows, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    png, noise_png = args.out / "density2d.png", args.out / "density2d_noise.png"
    datasets = {d: r["data"] for d, r in results.items()}
    plot_densities(png, datasets, {d: r["grids"] for d, r in results.items()}, table, axis)
    plot_noises(noise_png, datasets, {d: r["views"] for d, r in results.items()}, axis)
    print(f"wrote {png} and {noise_png}")
    return {"table": table, "initial": initial, "truth": truth, "noise": noise_table,
            "png": png, "noise_png": noise_png, "seconds": seconds}


def report(args, table, initial, truth, noise_table, rows, seconds):
    names = list(rows)
    width = max(len(n) for n in names) + 2
    cols = list(initial)
    print(f"\n{args.num_train} training / {args.num_test} held-out points per density; "
          f"{args.steps} steps of batch {args.batch_size}, {args.noise_draws} noise draws per "
          f"step for every method; gamma = {args.gamma}; {seconds:.0f} s.")
    print(f"Held-out log-likelihood (nats per point, mean ± s.e.); log Z by importance "
          f"sampling from {args.eval_draws} draws of N(0, {BASE_SCALE:g}^2 I).")
    print(f"{'method':<{width}}" + "".join(f"{c:>20}" for c in cols))
    lines = [("initial model", initial), *((n, table[n]) for n in names), ("true density", truth)]
    for name, by_density in lines:
        cells = "".join(f"{by_density[c]['ll']:>11.3f} ± {by_density[c]['se']:<6.3f}"
                        for c in cols)
        print(f"{name:<{width}}{cells}")
    nce = "  ".join(f"{c}: {table['NCE'][c]['learned_log_z']:.3f} vs "
                    f"{table['NCE'][c]['log_z']:.3f}" for c in cols)
    print(f"NCE's learned log Z vs importance sampling: {nce}")
    print("\nThe inner estimate at the end of training: ESS of the weights f/q, in % of the "
          "draws (ESS/M = 1 / (1 + Var[f/q] / Z^2)),\nunder the method's own noise / under "
          "the fixed Gaussian (the same model).")
    print(f"{'method':<{width}}" + "".join(f"{c:>20}" for c in cols))
    for name in next(iter(noise_table.values())):
        cells = "".join(f"{100 * noise_table[c][name]['ess']:>10.1f}% / "
                        f"{100 * noise_table[c][name]['ess_fixed']:4.1f}%" for c in cols)
        print(f"{name:<{width}}{cells}")


if __name__ == "__main__":
    main()
