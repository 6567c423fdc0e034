"""An energy model of 8x8 digits, fitted by its likelihood (compositional) and by NCE.

Data: scikit-learn's bundled 8x8 digits (1797 images, grey levels 0..16, no download), split at
random into 1437 training and 360 held-out images. Each grey level v is dequantized,
x = (v + u) / 17 with u ~ U(0, 1), so that an image is a point of (0, 1)^64 with a density (no
logit transform): the training programs draw a fresh u for their minibatch at every step (a
site of their own, "dequantize"); the held-out images are dequantized once, with a fixed key.
Log-likelihoods are of that continuous density on (0, 1)^64, in nats per image.

The noise q = N(m, S) is a Gaussian fitted to the dequantized training images (full covariance,
a ridge of 1e-4 on the diagonal), fixed. The model tilts it by an energy,

    log f(x) = log q(x) - E(z),   z = L^{-1}(x - m) (S = L L^T),   E = c tanh(MLP(z) / c),

with the MLP 64-256-256-1 (SiLU, plain pytree params) and c = 20. Everything runs in the
whitened coordinates z, where q is N(0, I) (`numpyro`'s MultivariateNormal on x is the same
distribution, `Noise.distribution()`, but its log_prob, a triangular solve, took 20 times as
long as the whitening matmul on 128 points on this CPU and dominated the training step), and
log-likelihoods of x add the constant log |det L^{-1}|. f / q = exp(-E) lies in [e^-c, e^c]:
the density is normalizable and the untrained network a small random tilt of q. The bound
matters: see `ENERGY_BOUND`.

Three fits, at equal cost (the same network at the start, the same Adam schedule and steps, a
minibatch of B images and B noise points per step):

* compositional: `pv.unnormalized.nll` with `pv.compositional(gamma, num_samples=B)`, the
  likelihood -mean log f(x_i) + log E_q[f/q] whose log-partition term keeps a running estimate
  u (MECO, Jiang et al. 2023); gamma = 0.5 (of 0.02, 0.1, 0.3, 0.5 tried on one seed, 0.1-0.5
  were within 0.6 nats of each other, 0.02 lower);
* plug-in: the same likelihood with `pv.plug_in(num_samples=B)` (compositional with gamma = 1:
  no running average), to show what the average buys;
* NCE: `pv.unnormalized.nce` (noise ratio 1) with log p = log f - c and c a learned log Z.

For the noise alone, the untrained network and each fit the script reports

1. the held-out log-likelihood mean log f(x) - log Z, with log Z by importance sampling from
   q (`--is-draws`, 10^6 by default: a logsumexp of -E), by the delta method its standard
   error (images and draws together) and the draws' effective sample size (ESS); and, because
   the trained models are far from q (ESS of a handful of the 10^6 draws), log Z also by
   annealed importance sampling from q to f (MALA transitions), a check on the first;
   paired differences between methods on the same images are printed below the table;
2. out-of-distribution AUROC (sklearn.metrics.roc_auc_score) of the score log f: held-out
   digits against uniform-noise images U(0, 1)^64, against held-out digits each with its
   pixels in a random order of its own, and, for a second noise and set of fits trained on the
   classes 0-7 of the training split alone, the held-out images of 0-7 against every image of
   the held-out classes 8 and 9;
3. samples from each fitted model by Langevin dynamics with BlackJAX's MALA
   (`pv.interop.blackjax.sample_energy`): 64 chains started at draws of q, in the whitened
   coordinates (a preconditioning: pixel spreads differ 20-fold), with the acceptance rate;
   drawn as 8x8 grids next to held-out digits and the noise draws the chains start from.

It writes `ebm_digits_samples.png` (the grids) and `ebm_digits_scores.png` (the training
curves and the histograms of the OOD scores) to `--out`. It needs the extras
``pip install "progvi[examples]"`` (matplotlib, scikit-learn, blackjax).

    python examples/ebm_digits.py            # about a minute and a half on 2 idle CPU cores
    python examples/ebm_digits.py --smoke    # about 20 seconds: the test's size

References:
  Jiang, Qin, Wu, Chen, Yang & Zhang, "Learning Unnormalized Statistical Models via
  Compositional Optimization", ICML 2023.
  Gutmann & Hyvärinen, "Noise-contrastive estimation of unnormalized statistical models, with
  applications to natural image statistics", JMLR 2012.
  Neal, "Annealed importance sampling", Statistics and Computing 2001.
  Roberts & Tweedie, "Exponential convergence of Langevin distributions and their discrete
  approximations", Bernoulli 1996 (MALA).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv

LEVELS = 17  # grey levels 0..16
HELD_OUT = 360
OOD_CLASSES = (8, 9)  # the classes left out of the second set of fits
EXTRA = 'pip install "progvi[examples]"'
# |E| <= ENERGY_BOUND. An MLP with SiLU grows linearly far from the data, and the likelihood's
# data term, unbounded above, drives it there: without the bound the compositional fit grows a
# mode where the noise never draws, which its estimate of log Z cannot see (measured after the
# 4000 steps with gamma = 0.1: log Z ≈ 1400 by annealing, a held-out log-likelihood of -1100;
# with gamma = 0.5 worse still). NCE's data term saturates, and it stayed finite (57 nats).
# The bound caps the density ratio f / q at e^{2c}.
ENERGY_BOUND = 20.0


def require(module: str, purpose: str):
    """Imports an optional dependency, or says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"examples/ebm_digits.py needs {module.split('.')[0]} for {purpose}; install the "
            f"examples' extras: {EXTRA}"
        ) from error


# -- data and noise -------------------------------------------------------------------------------


class Digits(NamedTuple):
    train: np.ndarray  # (N, 64) grey levels 0..16, float32
    train_labels: np.ndarray
    test: np.ndarray  # (360, 64) held-out grey levels
    test_labels: np.ndarray


def load_digits(seed: int) -> Digits:
    """scikit-learn's 8x8 digits, split at random."""
    datasets = require("sklearn.datasets", "the digits")
    bunch = datasets.load_digits()
    images, labels = bunch.data.astype(np.float32), bunch.target
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:HELD_OUT], order[HELD_OUT:]
    return Digits(images[train], labels[train], images[test], labels[test])


class Noise(NamedTuple):
    """q = N(m, L L^T) on images x; in z = L^{-1}(x - m) it is N(0, I)."""

    mean: jax.Array  # m, (64,)
    scale_tril: jax.Array  # L, lower triangular
    whiten: jax.Array  # L^{-1}
    log_det: float  # log |det L^{-1}|: log q(x) = log N(z; 0, I) + log_det

    def to_z(self, x):
        return (x - self.mean) @ self.whiten.T

    def to_x(self, z):
        return self.mean + z @ self.scale_tril.T

    def distribution(self) -> dist.MultivariateNormal:
        """q itself, on images (slower to score than its whitened form on CPU)."""
        return dist.MultivariateNormal(self.mean, scale_tril=self.scale_tril)


STANDARD = dist.Normal(jnp.zeros(64), 1.0)  # q in whitened coordinates; a point is one (64,) draw


@jax.jit
def dequantize(key, levels):
    """(v + u) / 17 with u ~ U(0, 1): grey levels as points of (0, 1)^64."""
    return (levels + jax.random.uniform(key, levels.shape)) / LEVELS


def fit_noise(key, levels, ridge: float = 1e-4) -> Noise:
    """The Gaussian N(m, S + ridge I) of dequantized training images, as a whitening map."""
    x = np.asarray(dequantize(key, jnp.asarray(levels)), np.float64)
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False) + ridge * np.eye(x.shape[1])
    scale_tril = np.linalg.cholesky(cov)
    whiten = np.linalg.inv(scale_tril)
    return Noise(jnp.asarray(mean, jnp.float32), jnp.asarray(scale_tril, jnp.float32),
                 jnp.asarray(whiten, jnp.float32), float(np.log(np.diag(whiten)).sum()))


# -- the energy model and the three objectives ----------------------------------------------------


@functools.partial(jax.jit, static_argnames="sizes")
def init_energy(key, sizes=(64, 256, 256, 1)):
    """A plain pytree MLP: a list of {"w", "b"} layers, LeCun-normal weights."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (n_in, n_out)) / math.sqrt(n_in), "b": jnp.zeros(n_out)}
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def energy(layers, z):
    """E(z) = c tanh(MLP(z) / c), c = `ENERGY_BOUND`, for whitened points z (n, 64): shape (n,)."""
    h = z
    for layer in layers[:-1]:
        h = jax.nn.silu(h @ layer["w"] + layer["b"])
    out = (h @ layers[-1]["w"] + layers[-1]["b"])[..., 0]
    return ENERGY_BOUND * jnp.tanh(out / ENERGY_BOUND)


def log_f(z, layers):
    """log f = log q - E in whitened coordinates (q = N(0, I) there), shape (n,)."""
    return STANDARD.to_event().log_prob(z) - energy(layers, z)


def objectives(gamma: float, batch_size: int):
    """The three losses of a minibatch of grey levels, each dequantized with a fresh draw.

    Each program takes ``(params, levels, noise)`` and evaluates f at the B images and at B noise
    points: the same cost per step. The noise is an argument, so that the fits of the classes
    0-7 reuse the compiled steps where their data have the same shape (as in `--smoke`).
    """

    def whitened(levels, noise):
        u = pv.sample("dequantize", dist.Uniform(0.0, 1.0).expand(levels.shape))
        return noise.to_z((levels + u) / LEVELS)

    def likelihood(estimator):
        @pv.expectation
        def nll(params, levels, noise):
            return pv.unnormalized.nll(log_f, whitened(levels, noise), STANDARD,
                                       model_args=(params["energy"],), estimator=estimator)

        return nll

    @pv.expectation
    def nce(params, levels, noise):
        def log_model(z):
            return log_f(z, params["energy"]) - params["log_z"]

        return pv.unnormalized.nce(log_model, STANDARD, whitened(levels, noise), noise_ratio=1.0)

    return {
        "NCE": nce,
        "plug-in": likelihood(pv.plug_in(num_samples=batch_size)),
        "compositional": likelihood(pv.compositional(gamma, num_samples=batch_size)),
    }


def train(key, programs, optimizer, noise, levels, init, args, progress, label):
    """Each method fitted from the same initial network with the same optimizer and steps."""
    fits = {}
    for name, program in programs.items():
        program.__name__ = f"{name} ({label})"  # what the progress bar of its fit shows
        params = {"energy": init}
        if name == "NCE":
            params["log_z"] = jnp.zeros(())  # the learned log-normalizer
        start = time.perf_counter()
        result = pv.fit(key, program, params, optimizer, direction="minimize",
                        data=jnp.asarray(levels), batch_size=args.batch_size,
                        num_steps=args.steps, extra_args=(noise,), progress=progress)
        fits[name] = {"layers": result.params["energy"], "history": result.history,
                      "seconds": time.perf_counter() - start}
    return fits


# -- evaluation -----------------------------------------------------------------------------------


@jax.jit
def score(noise: Noise, layers, x):
    """log f(x) = log q(x) - E(x) of images x (shape (n, 64)); log q(x) for layers=None."""
    z = noise.to_z(x)
    log_q = STANDARD.to_event().log_prob(z) + noise.log_det
    return log_q if layers is None else log_q - energy(layers, z)


class LogZ(NamedTuple):
    """An estimate of log Z from weights w_i with E[w] = Z."""

    value: float  # log of the mean weight
    se: float  # its standard error, by the delta method: sqrt((E[w²]/E[w]² - 1) / n)
    ess: float  # the weights' effective sample size (Σw)² / Σw²


def log_mean_exp(log_w) -> LogZ:
    n = log_w.shape[0]
    log_z = jax.nn.logsumexp(log_w) - math.log(n)
    ratio = jnp.exp(jax.nn.logsumexp(2 * log_w) - math.log(n) - 2 * log_z)
    return LogZ(float(log_z), float(jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / n)),
                float(n / ratio))


@functools.partial(jax.jit, static_argnames=("num_draws",))
def importance_weights(key, layers, *, num_draws):
    """log w = log f / q = -E at `num_draws` draws of q (whitened: N(0, I)), in chunks."""
    chunk = min(num_draws, 10_000)

    def log_w(k):
        return -energy(layers, jax.random.normal(k, (chunk, 64)))

    return jax.lax.map(log_w, jax.random.split(key, num_draws // chunk)).reshape(-1)


@functools.partial(jax.jit, static_argnames=("num_chains", "num_temperatures"))
def annealed_weights(key, layers, step_size, *, num_chains, num_temperatures):
    """Annealed importance sampling from q to f: one log-weight per chain, E[w] = Z.

    The path f_β = q exp(-β E), β from 0 to 1 in `num_temperatures` steps with one MALA step
    (BlackJAX) at each; a chain's log-weight is Σ_t (β_t - β_{t-1}) (-E(z_{t-1})) (Neal 2001).
    """
    blackjax = require("blackjax", "MALA (sampling and annealing)")

    kernel = blackjax.mala.build_kernel()
    betas = jnp.linspace(0.0, 1.0, num_temperatures + 1) ** 2  # small steps first

    def chain(k, z):
        def step(carry, inputs):
            z, log_w = carry
            k_step, beta_prev, beta = inputs
            log_w = log_w - (beta - beta_prev) * energy(layers, z[None])[0]

            def logdensity(z):
                return -0.5 * z @ z - beta * energy(layers, z[None])[0]

            state, _ = kernel(k_step, blackjax.mala.init(z, logdensity), logdensity, step_size)
            return (state.position, log_w), None

        inputs = (jax.random.split(k, num_temperatures), betas[:-1], betas[1:])
        (_, log_w), _ = jax.lax.scan(step, (z, jnp.zeros(())), inputs)
        return log_w

    k_init, k_run = jax.random.split(key)
    z0 = jax.random.normal(k_init, (num_chains, 64))  # exact draws of q = f_0
    return jax.vmap(chain)(jax.random.split(k_run, num_chains), z0)


def held_out_log_likelihood(log_f_test: np.ndarray, log_z: LogZ | None) -> dict:
    """mean log f(x) - log Ẑ over the images, its standard error (images and weights), ESS."""
    if log_z is None:  # the noise alone: normalized, exact
        log_z = LogZ(0.0, 0.0, float("nan"))
    se = math.sqrt(log_f_test.var() / len(log_f_test) + log_z.se**2)
    return {"ll": float(log_f_test.mean() - log_z.value), "se": se, "ess": log_z.ess,
            "se_log_z": log_z.se}


def paired_difference(a, b, row_a, row_b) -> tuple[float, float]:
    """LL_a - LL_b on the same images (log f values a, b): the difference and its s.e."""
    var = np.var(a - b) / len(a) + row_a["se_log_z"] ** 2 + row_b["se_log_z"] ** 2
    return row_a["ll"] - row_b["ll"], math.sqrt(var)


def auroc(s_in, s_out):
    """The AUROC of telling inliers (scores s_in) from outliers by a high score."""
    metrics = require("sklearn.metrics", "the AUROC")
    labels = np.concatenate([np.ones(len(s_in)), np.zeros(len(s_out))])
    return float(metrics.roc_auc_score(labels, np.concatenate([s_in, s_out])))


@jax.jit
def shuffle_pixels(key, x):
    """Each image's 64 pixels in an order of its own."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(jax.random.permutation)(keys, x)


# -- sampling -------------------------------------------------------------------------------------


def mala_samples(key, noise, layers, num_chains, num_steps, step_size):
    """MALA on log f in whitened coordinates: (samples, acceptance rate, start), as images."""
    z0, z, rate = mala_chains(key, layers, step_size, num_chains=num_chains,
                              num_steps=num_steps)
    return np.asarray(noise.to_x(z)), float(rate), np.asarray(noise.to_x(z0))


@functools.partial(jax.jit, static_argnames=("num_chains", "num_steps"))
def mala_chains(key, layers, step_size, *, num_chains, num_steps):
    """`num_chains` MALA chains on log f(z), started at draws of q = N(0, I): z0, z, rate."""
    require("blackjax", "MALA (sampling and annealing)")
    k_init, k_run = jax.random.split(key)
    z0 = jax.random.normal(k_init, (num_chains, 64))
    # log f(m + L z) up to the constant log |det L|: the whitened coordinates precondition.
    out = pv.interop.blackjax.sample_energy(
        k_run, log_f, z0, kernel=pv.interop.blackjax.mala(step_size, num_steps),
        model_args=(layers,))
    return z0, out.positions, out.acceptance_rate.mean()


# -- figures --------------------------------------------------------------------------------------


def grid(images, side=8):
    """64 images of 8x8 as one 8x8 grid of tiles, with a blank pixel between tiles."""
    tiles = [np.pad(np.clip(im.reshape(8, 8), 0, 1), 1, constant_values=0.0)
             for im in images[: side * side]]
    rows = [np.concatenate(tiles[i * side:(i + 1) * side], 1) for i in range(side)]
    return np.concatenate(rows, 0)


def pyplot():
    matplotlib = require("matplotlib", "the figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples(path, panels):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.8))
    for ax, (title, images) in zip(axes, panels.items(), strict=True):
        ax.imshow(grid(images), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("8x8 digits: held-out images, noise draws, and 64 MALA samples of each fitted "
                 "energy model (dark = high grey level)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scores(path, fits, hists, log_det):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 + len(hists), figsize=(3.7 * (2 + len(hists)), 3.7))

    def smooth(h):
        window = max(len(h) // 50, 1)
        return np.arange(window, len(h) + 1), np.convolve(h, np.ones(window) / window, "valid")

    for name in ("plug-in", "compositional"):
        # The objective is -mean log f(z) + log u in whitened coordinates: LL = log_det - it.
        axes[0].plot(*smooth(log_det - fits[name]["history"]), lw=1, label=name)
    axes[0].set_ylabel("training LL estimate (nats per image)")
    axes[0].set_title("likelihood fits: -(objective), moving mean", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(*smooth(fits["NCE"]["history"]), lw=1)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("NCE loss (log scale)")
    axes[1].set_title("NCE: training loss, moving mean", fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel("step")
    for ax, (name, (s_in, s_out, value)) in zip(axes[2:], hists.items(), strict=True):
        both = np.concatenate([s_in, s_out])
        if both.min() < -1000:  # far outliers: a symmetric-log axis, bins even on it
            t = np.linspace(-np.log1p(-both.min() / 100), np.log1p(max(both.max(), 0) / 100), 41)
            bins = np.sign(t) * 100 * np.expm1(np.abs(t))
            ax.set_xscale("symlog", linthresh=100)
        else:
            bins = np.linspace(both.min(), both.max(), 41)
        ax.hist(s_out, bins, alpha=0.6, label=f"{name} (out)")
        ax.hist(s_in, bins, alpha=0.6, label="held-out digits (in)")
        ax.set_xlabel("score log f(x)")
        ax.set_ylabel("images")
        ax.set_title(f"compositional, {name}: AUROC {value:.3f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--gamma", type=float, default=0.5,
                        help="the compositional estimator's averaging rate")
    parser.add_argument("--is-draws", type=int, default=1_000_000,
                        help="noise draws of the importance-sampled log Z (a multiple of 10^4)")
    parser.add_argument("--ais-chains", type=int, default=256)
    parser.add_argument("--ais-temperatures", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=64, help="MALA chains drawn")
    parser.add_argument("--mala-steps", type=int, default=2000)
    parser.add_argument("--step-size", type=float, default=0.05,
                        help="MALA's step size in the noise's whitened coordinates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.is_draws, args.mala_steps = 200, 100_000, 100
        args.ais_chains, args.ais_temperatures = 32, 50
    if args.is_draws < 10_000 or args.is_draws % 10_000:
        parser.error(f"--is-draws {args.is_draws}: give a multiple of 10^4 (drawn in chunks)")
    return args


def main(argv=None) -> dict:
    """Fits, evaluates and samples; prints the table, writes the PNGs, returns the numbers."""
    args = parse_args(argv)
    for module, purpose in [("sklearn", "the digits"), ("blackjax", "MALA"),
                            ("matplotlib", "the figures")]:
        require(module, purpose)  # before any fit: a missing extra stops the run at once
    progress = not args.no_progress
    data = load_digits(args.seed)
    keys = dict(zip(["noise", "init", "fit", "test", "is", "ais", "ood", "mala", "unseen"],
                    jax.random.split(jax.random.key(args.seed), 9), strict=True))
    test = dequantize(keys["test"], jnp.asarray(data.test))
    init = init_energy(keys["init"])
    programs = objectives(args.gamma, args.batch_size)
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.1))
    seen = ~np.isin(data.train_labels, OOD_CLASSES)
    # --smoke: as many training images as the split has, so that its fits compile nothing.
    levels = data.train[: seen.sum()] if args.smoke else data.train
    noise = fit_noise(keys["noise"], levels)
    fits = train(keys["fit"], programs, optimizer, noise, levels, init, args, progress,
                 "digits 0-9")

    # The classes 8 and 9 left out: a noise and fits of the classes 0-7 alone.
    split_noise = fit_noise(jax.random.fold_in(keys["noise"], 1), data.train[seen])
    split_fits = train(jax.random.fold_in(keys["fit"], 1), programs, optimizer, split_noise,
                       data.train[seen], init, args, progress, "digits 0-7")
    inliers = test[~np.isin(data.test_labels, OOD_CLASSES)]
    unseen = dequantize(keys["unseen"], jnp.asarray(np.concatenate(
        [data.train[~seen], data.test[np.isin(data.test_labels, OOD_CLASSES)]])))

    k_uniform, k_shuffle = jax.random.split(keys["ood"])
    outliers = {"uniform": jax.random.uniform(k_uniform, test.shape),
                "shuffled": shuffle_pixels(k_shuffle, test)}
    methods = {"noise alone": (None, None), "untrained": (init, init),
               **{name: (fits[name]["layers"], split_fits[name]["layers"]) for name in fits}}
    rows, log_f_test, hists = {}, {}, {}
    for name, (layers, split_layers) in methods.items():
        log_f_test[name] = np.asarray(score(noise, layers, test), np.float64)
        is_z = ais_z = None
        if layers is not None:
            is_z = log_mean_exp(importance_weights(keys["is"], layers, num_draws=args.is_draws))
            ais_z = log_mean_exp(annealed_weights(
                keys["ais"], layers, args.step_size, num_chains=args.ais_chains,
                num_temperatures=args.ais_temperatures))
        row = {"IS": held_out_log_likelihood(log_f_test[name], is_z),
               "AIS": held_out_log_likelihood(log_f_test[name], ais_z)}
        scores = {ood: (log_f_test[name], np.asarray(score(noise, layers, x)))
                  for ood, x in outliers.items()}
        scores["classes 8, 9"] = (np.asarray(score(split_noise, split_layers, inliers)),
                                  np.asarray(score(split_noise, split_layers, unseen)))
        row["auroc"] = {ood: auroc(s_in, s_out) for ood, (s_in, s_out) in scores.items()}
        rows[name] = row
        if name == "compositional":
            hists = {ood: (*pair, row["auroc"][ood]) for ood, pair in scores.items()}
    differences = {
        f"{a} - {b}, {how}": paired_difference(log_f_test[a], log_f_test[b], rows[a][how],
                                               rows[b][how])
        for a, b in [("compositional", "NCE"), ("compositional", "plug-in"),
                     ("compositional", "untrained")]
        for how in ("IS", "AIS")
    }

    panels = {"held-out digits": np.asarray(test)}
    acceptance = {}
    for i, name in enumerate(fits):
        samples, rate, start = mala_samples(jax.random.fold_in(keys["mala"], i), noise,
                                            fits[name]["layers"], args.chains, args.mala_steps,
                                            args.step_size)
        if i == 0:
            panels["noise draws (MALA's start)"] = start
        panels[f"MALA, {name} (acceptance {rate:.2f})"] = samples
        acceptance[name] = rate

    print_table(args, rows, differences, acceptance,
                {name: fit["seconds"] + split_fits[name]["seconds"] for name, fit in fits.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    pngs = [args.out / "ebm_digits_samples.png", args.out / "ebm_digits_scores.png"]
    plot_samples(pngs[0], panels)
    plot_scores(pngs[1], fits, hists, noise.log_det)
    for png in pngs:
        print(f"wrote {png}")
    return {"rows": rows, "differences": differences, "acceptance": acceptance, "pngs": pngs,
            "history": {name: fit["history"] for name, fit in fits.items()}}


def print_table(args, rows, differences, acceptance, seconds):
    print(f"\n8x8 digits, log f = log q - E with q a fitted Gaussian and E a bounded MLP; "
          f"{args.steps} steps of {args.batch_size} images + {args.batch_size} noise points "
          "per fit")
    print(f"held-out log-likelihood, nats per image on (0, 1)^64: log Z by IS from "
          f"{args.is_draws:.0e} noise draws and by AIS ({args.ais_chains} chains x "
          f"{args.ais_temperatures} temperatures); ESS of the weights")
    print("OOD: AUROC of the score log f, held-out digits against each set")
    header = (f"{'method':<14}{'LL (IS)':>16}{'ESS':>9}{'LL (AIS)':>16}{'ESS':>7}"
              f"{'uniform':>9}{'shuffled':>10}{'classes 8, 9':>14}")
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        cells = []
        for how in ("IS", "AIS"):
            r = row[how]
            ess = "exact" if math.isnan(r["ess"]) else f"{r['ess']:.0f}"
            cells.append(f"{r['ll']:>9.2f} ± {r['se']:<4.2f}{ess:>{9 if how == 'IS' else 7}}")
        a = row["auroc"]
        print(f"{name:<14}{''.join(cells)}{a['uniform']:>9.3f}{a['shuffled']:>10.3f}"
              f"{a['classes 8, 9']:>14.3f}")
    print("classes 8, 9: the noise and the fits of the classes 0-7 alone; in: the held-out 0-7, "
          "out: every 8 and 9")
    for name, (d, se) in differences.items():
        print(f"paired difference {name}: {d:+.2f} ± {se:.2f} nats per image")
    for name, rate in acceptance.items():
        print(f"MALA on {name}: {args.chains} chains x {args.mala_steps} steps of size "
              f"{args.step_size} (whitened), acceptance rate {rate:.3f}")
    print("training time (both fits of each): "
          + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()))


if __name__ == "__main__":
    main()
