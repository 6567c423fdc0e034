"""Gaussian mean estimation: NCE, eNCE, plug-in, compositional (MECO) and the tangent bound.

The Gaussian mean experiment of Jiang et al. (ICML 2023), at matched cost. Data: N(mu*, I) in
d = 1 and d = 16 dimensions, |mu*| = 1, 2, 5 (mu* = |mu*| (1, ..., 1) / sqrt(d)), 8192 points per
seed. Noise: N(0, I). Model: log f_mu(x) = -||x - mu||^2 / 2, mu learned from mu = 0 (the noise).

* NCE (`pv.unnormalized.nce`, noise ratio 1) and eNCE (`pv.unnormalized.ence`) also learn
  log Z; the tangent bound (`pv.tangent_bound(params["b"])`) learns b. Both start at the
  log-normalizer of the initial model, (d/2) log 2 pi, known exactly there since f_0 is the noise
  times (2 pi)^(d/2). (In this family Z does not depend on mu: the exact gradient of log Z is 0,
  so every NLL method's error comes from its estimate of that gradient alone.)
* The NLL (`pv.unnormalized.nll`) with log Z estimated by: plug-in, K = 1, 4, 16
  (`pv.plug_in(K)`, 16 / K independent replicas under `pv.plate`, averaged); MECO
  (`pv.compositional(0.1, num_samples=16)`) with `optax.sgd(lr)`, with
  `optax.sgd(lr, momentum=0.9)` (heavy-ball: the effective rate is 10 lr, the grid absorbs it),
  and with `variance_reduction=True` (STORM; it re-evaluates f at the previous mu on the same
  draws, which costs no noise draws); the tangent bound with 16 draws.
* Matched cost: every step of every method sees 16 data points and 16 noise draws.
* Plain SGD, 2000 steps. The rate of each method in each setting is chosen from {0.01, 0.03,
  0.1, 0.3, 1, 3} by the mean log error over the last quarter of the run on 2 tuning seeds; the
  table reports the final ||mu - mu*|| on 3 other seeds (own data, own draws) at that rate.
  (Rate 1 is Newton's step on the NLL, whose Hessian is I: mu jumps to the batch mean minus the
  estimated gradient of log Z.) Each program takes the rate as an argument, so it compiles once.
  A run that hits inf/nan stops (`pv.NonFiniteError`) and reports its last finite params.
* The 1-D landscape (mu* = 5): the population NCE loss with log Z at its best value for each mu
  (Gauss-Hermite quadrature), the NLL, and the expectation of the plug-in NLL with K = 16.

Measured (full run, seed 0; final ||mu - mu*||, mean ± sd over 3 seeds, @ the chosen rate):

    d = 1               |mu*| = 1              |mu*| = 2              |mu*| = 5
    NCE                 0.0242 ± 0.006 @0.01   0.0532 ± 0.014 @0.1    0.288 ± 0.33 @1
    eNCE                0.0271 ± 0.0085 @0.01  0.036 ± 0.026 @0.03    0.232 ± 0.053 @0.3
    plug-in K=1         18.9 ± 0.11 @0.01      38 ± 0.22 @0.01        95 ± 0.15 @0.01
    plug-in K=4         2.1 ± 0.06 @0.01       18.5 ± 0.42 @0.01      74.7 ± 0.23 @0.01
    plug-in K=16        0.078 ± 0.1 @0.1       6.05 ± 0.49 @0.01      60.3 ± 0.38 @0.01
    MECO                0.0435 ± 0.0014 @0.01  0.352 ± 0.28 @0.03     0.569 ± 0.69 @1
    MECO + momentum     0.0748 ± 0.065 @0.01   0.42 ± 0.14 @0.01      1.17 ± 0.86 @0.1
    MECO + VR           0.0279 ± 0.026 @0.01   0.29 ± 0.092 @0.01     1.15 ± 0.23 @0.03
    tangent bound       0.0237 ± 0.0053 @0.01  0.45 ± 0.53 @0.01      0.0155 ± 0.011 @0.1
    sample mean         0.00335 ± 0.0007       0.0131 ± 0.0039        0.00576 ± 0.00073

    d = 16
    NCE                 0.0729 ± 0.0028 @0.01  0.128 ± 0.013 @0.03    0.637 ± 0.045 @1
    eNCE                0.0859 ± 0.01 @0.01    0.104 ± 0.029 @0.01    0.63 ± 0.14 @0.1
    plug-in K=1         18.8 ± 0.41 @0.01      37.9 ± 0.098 @0.01     95.1 ± 0.086 @0.01
    plug-in K=4         2.04 ± 0.097 @0.01     18.2 ± 0.23 @0.01      75.1 ± 0.12 @0.01
    plug-in K=16        0.24 ± 0.0091 @0.01    5.85 ± 0.11 @0.01      60.6 ± 0.27 @0.01
    MECO                0.144 ± 0.035 @0.01    0.403 ± 0.11 @0.01     8.56 ± 11 @1
    MECO + momentum     0.5 ± 0.12 @0.01       1.4 ± 0.53 @0.01       3.4 ± 0.96 @0.01
    MECO + VR           0.131 ± 0.027 @0.01    0.447 ± 0.12 @0.01     1.42 ± 0.64 @0.03
    tangent bound       0.144 ± 0.042 @0.01    0.67 ± 0.32 @0.01      1.59 ± 1.2 @0.1
    sample mean         0.0455 ± 0.013         0.0347 ± 0.0072        0.0378 ± 0.0076

What this says about the paper's claim (MECO converges where NCE struggles when the noise is
far from the data):

* The landscape half holds exactly. At mu* = 5 the NCE loss with its best log Z is flat away
  from the noise: it falls by 0.0096 between mu = 3 and mu = 5, where the NLL falls by 2, and its
  gradient near mu* is ~1e-3 against the NLL's |mu - mu*|. NCE needs a rate of 1 to move there
  (at 0.01 it was still ~2.5 away after 2000 steps in exploratory runs), and after 2000 steps it
  is 17-50 times the sample mean's error away.
* The convergence half does not hold in these runs. Far from the noise (|mu*| = 5) the best
  MECO variant is no better than NCE or eNCE in 1-D (0.57 ± 0.69 against 0.29 and 0.23) and
  worse in 16-D (1.4 to 8.6 against 0.64 and 0.63); near the noise (|mu*| = 1, 2) NCE and eNCE
  match or beat it everywhere. The cause is the variance the paper's own rate depends on: the
  importance weight f/q has relative variance exp(|mu|^2) (e^25 at |mu| = 5), so the draws that
  would balance the gradient of log Z (noise points beyond mu, probability ~3e-7 each at
  |mu| = 5) never come; the running average u does bound each step (the compositional gradient
  of log Z is at most max_k ||y_k - mu|| / gamma), but the realized gradients push mu away from
  the noise, past mu*, and the results swing with the seed. Other budgets do not change this:
  with 10000 steps MECO ends at 1.4 ± 1.9 (1-D) and 0.96 ± 0.22 (16-D) against NCE's 0.19 and
  0.44; with 256 noise draws per step (for every method) at 1.26 ± 2 and 1.3 ± 0.26 against
  0.16 and 0.47 (`--steps 10000 --every 100 --norms 5`, `--num-noise 256 --norms 5`). The one
  far case where MECO beat NCE was an earlier run of this table with a single tuning seed
  (0.15 against 0.45 in 1-D): its rate 1 was picked on one lucky seed.
* Where a compositional method did best it was the tangent bound in 1-D far from the noise
  (0.016 ± 0.011, the best of all there), but it was unremarkable in 16-D (1.59 ± 1.2).
* MECO does fix what it is designed to fix, the bias of the plug-in estimator. With K = 1 the
  plug-in gradient is the constant -mean(x): mu drifts off by lr |x̄| per step in every setting;
  K = 4 settles about 2 away at |mu*| = 1 and drifts off beyond; K = 16 is biased at |mu*| = 1
  (0.08, 0.24) and drifts off at 2 and 5. Its expected objective is unbounded below in mu (the
  landscape figure): the self-normalized weights pick the noise point nearest mu, whatever K.
* Momentum (heavy-ball, 0.9) helped only in 16-D far from the noise (3.4 against 8.6, where
  plain MECO's chosen rate 1 was unstable); variance reduction helped a little near the noise
  and in 16-D far (1.42), hurt in 1-D far (1.15 against 0.57). The smallest rate of the grid won
  in most near settings: there the methods are limited by gradient noise, not by the landscape.

These are plain-SGD runs with few noise draws on a toy model whose noise is deliberately far from
the data; they say nothing about MECO with a noise fitted to the data, the regime its rate
favours (it depends on the variance of f/q).

    python examples/gaussian_mean.py            # ~3 minutes on 2 busy CPU cores (115 s of CPU)
    python examples/gaussian_mean.py --smoke    # seconds: the test's size (1-D, 300 steps)

It writes `gaussian_mean_error.png` (error against steps, one panel per setting) and
`gaussian_mean_landscape.png` (the 1-D landscapes) to `--out` (default `examples/out`).

References:
  Jiang, Qin, Wu, Chen, Yang & Zhang, "Learning Unnormalized Statistical Models via
  Compositional Optimization", ICML 2023.
  Gutmann & Hyvärinen, "Noise-contrastive estimation: A new estimation principle for
  unnormalized statistical models", AISTATS 2010.
  Liu, Rosenfeld, Ravikumar & Risteski, "Analyzing and Improving the Optimization Landscape of
  Noise-Contrastive Estimation", ICLR 2022.
"""

from __future__ import annotations

import argparse
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

GAMMA = 0.1  # the compositional estimator's averaging rate
MOMENTUM = 0.9

# -- the model and the objectives -----------------------------------------------------------------


def log_f(x, mu):
    """The unnormalized model: log f_mu(x) = -||x - mu||^2 / 2, for a batch x of shape (n, d)."""
    return -0.5 * jnp.sum((x - mu) ** 2, axis=-1)


def noise_for(x):
    """The noise N(0, I) in the dimension of the data: one point is one draw of it."""
    return dist.Normal(jnp.zeros(x.shape[-1]), 1.0)


# Every program takes the learning rate as its last argument and returns lr * loss, to be
# minimized with optax.sgd(1.0): the same updates as optax.sgd(lr) on the loss (with or without
# momentum, SGD is linear in the gradient), but the rate is a traced argument of the compiled
# chunk, so one program compiles once for all the rates of the grid and all the seeds.


def nce_program(num_noise: int) -> pv.Expectation:
    @pv.expectation
    def nce(params, x, lr):
        log_model = lambda y: log_f(y, params["mu"]) - params["log_z"]
        return lr * pv.unnormalized.nce(log_model, noise_for(x), x,
                                        noise_ratio=num_noise / x.shape[0])

    return nce


def ence_program(num_noise: int) -> pv.Expectation:
    @pv.expectation
    def ence(params, x, lr):
        log_model = lambda y: log_f(y, params["mu"]) - params["log_z"]
        return lr * pv.unnormalized.ence(log_model, noise_for(x), x, num_noise=num_noise)

    return ence


def plug_in_program(k: int, num_noise: int) -> pv.Expectation:
    """The NLL with log Z estimated by the mean of num_noise / k plug-in estimates of k draws."""

    @pv.expectation
    def plug_in(params, x, lr):
        def one(_):
            return pv.unnormalized.nll(log_f, x, noise_for(x), estimator=pv.plug_in(k),
                                       model_args=(params["mu"],))

        # pv.plate: the replicas are independent terms, each its own log-expectation.
        replicas = num_noise // k
        return lr * pv.plate(one, jnp.arange(replicas)) / replicas

    return plug_in


def compositional_program(num_noise: int, variance_reduction: bool = False) -> pv.Expectation:
    @pv.expectation
    def compositional(params, x, lr):
        estimator = pv.compositional(GAMMA, num_samples=num_noise,
                                     variance_reduction=variance_reduction)
        return lr * pv.unnormalized.nll(log_f, x, noise_for(x), estimator=estimator,
                                        model_args=(params["mu"],))

    return compositional


def tangent_program(num_noise: int) -> pv.Expectation:
    @pv.expectation
    def tangent(params, x, lr):
        estimator = pv.tangent_bound(params["b"], num_samples=num_noise)
        return lr * pv.unnormalized.nll(log_f, x, noise_for(x), estimator=estimator,
                                        model_args=(params["mu"],))

    return tangent


class Method(NamedTuple):
    name: str
    program: pv.Expectation
    optimizer: optax.GradientTransformation
    extra: str | None  # the learned scalar besides mu: "log_z" (NCE, eNCE), "b" (tangent)


def methods(num_noise: int) -> list[Method]:
    """Every method with num_noise noise draws per step. The optimizers have rate 1 (see above)."""
    sgd, momentum = optax.sgd(1.0), optax.sgd(1.0, momentum=MOMENTUM)
    ks = [k for k in (1, 4, 16) if k <= num_noise and num_noise % k == 0]
    return [
        Method("NCE", nce_program(num_noise), sgd, "log_z"),
        Method("eNCE", ence_program(num_noise), sgd, "log_z"),
        *[Method(f"plug-in K={k}", plug_in_program(k, num_noise), sgd, None) for k in ks],
        Method("MECO", compositional_program(num_noise), sgd, None),
        Method("MECO + momentum", compositional_program(num_noise), momentum, None),
        Method("MECO + VR", compositional_program(num_noise, True), sgd, None),
        Method("tangent bound", tangent_program(num_noise), sgd, "b"),
    ]


# -- one run --------------------------------------------------------------------------------------


class Setting(NamedTuple):
    dim: int
    norm: float  # |mu*|

    @property
    def label(self) -> str:
        return f"d={self.dim} |mu*|={self.norm:g}"

    def mu_star(self) -> jax.Array:
        return jnp.full((self.dim,), self.norm / math.sqrt(self.dim))


class Run(NamedTuple):
    curve: np.ndarray  # ||mu - mu*|| at 0, every, 2 every, ... steps (nan after a stop)
    final: float  # ||mu - mu*|| at the last finite params
    stopped: int | None  # the step where the run became non-finite, if it did


def draw_data(key, setting: Setting, num_data: int) -> jax.Array:
    return setting.mu_star() + jax.random.normal(key, (num_data, setting.dim))


def train(key, method: Method, setting: Setting, data, lr: float, args) -> Run:
    mu_star = np.asarray(setting.mu_star(), np.float64)
    error = lambda mu: float(np.linalg.norm(np.asarray(mu, np.float64) - mu_star))
    # log Z and b start at the log-normalizer of the initial model f_0 = (2 pi)^(d/2) q, known
    # exactly there (it is the same for every mu in this family, but no method is told so).
    params = {"mu": jnp.zeros(setting.dim)}
    if method.extra is not None:
        params[method.extra] = jnp.asarray(0.5 * setting.dim * math.log(2 * math.pi))
    curve = [setting.norm]  # the error at step 0

    def record(step, state, value):
        curve.append(error(state.params["mu"]))

    fit = dict(direction="minimize", data=data, batch_size=args.batch_size,
               num_steps=args.steps, extra_args=(jnp.asarray(lr, jnp.float32),),
               callback=record, callback_every=args.every, chunk_size=args.every, progress=False)
    try:
        pv.fit(key, method.program, params, method.optimizer, **fit)
        final, stopped = curve[-1], None
    except pv.NonFiniteError as failure:
        final, stopped = error(failure.result.params["mu"]), failure.step
    points = args.steps // args.every + 1
    curve = np.asarray(curve + [np.nan] * (points - len(curve)))
    return Run(curve, final, stopped)


def tail_score(run: Run) -> float:
    """What the rate is chosen by: the mean log error over the last quarter of the run."""
    if run.stopped is not None:
        return math.inf
    tail = run.curve[-max(len(run.curve) // 4, 1):]
    return float(np.mean(np.log(np.maximum(tail, 1e-12))))


# -- the loss landscape in 1-D --------------------------------------------------------------------


def landscape(mu_star: float = 5.0, k: int = 16, num_mu: int = 201, seed: int = 0) -> dict:
    """Population losses as functions of mu in 1-D, data N(mu*, 1), noise N(0, 1).

    * NCE (noise ratio 1) with log Z at its best value for each mu: with
      G(u) = log f_mu(u) - log Z - log q(u) = mu u - mu^2 / 2 + a, a = log sqrt(2 pi) - log Z,
      the loss -E_data log sigma(G(x)) - E_noise log sigma(-G(y)) is convex in a and minimized
      over it numerically; the expectations are Gauss-Hermite sums (exact to float precision
      for these smooth integrands).
    * The NLL: E_data ||x - mu||^2 / 2 + log Z, with log Z = log sqrt(2 pi) for every mu.
    * What the plug-in estimator with K noise draws minimizes in expectation: the data term
      plus E[log (1/K) sum_k f(y_k) / q(y_k)], by Monte Carlo with common draws for all mu.
    """
    from scipy.optimize import minimize_scalar

    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()  # E[h(z)], z ~ N(0, 1), as sum(weights * h(nodes))
    x, y = mu_star + nodes, nodes
    log_sigmoid = lambda t: -np.logaddexp(0.0, -t)
    mus = np.linspace(-1.0, mu_star + 4.0, num_mu)

    def nce(mu):
        def loss(a):
            g_x, g_y = mu * x - mu**2 / 2 + a, mu * y - mu**2 / 2 + a
            return -np.sum(weights * log_sigmoid(g_x)) - np.sum(weights * log_sigmoid(-g_y))

        best = minimize_scalar(loss, bracket=(-1.0, 1.0), tol=1e-12)
        return best.fun, 0.5 * math.log(2 * math.pi) - best.x

    nce_loss, nce_log_z = np.array([nce(mu) for mu in mus]).T
    log_z = 0.5 * math.log(2 * math.pi)
    nll = ((mus - mu_star) ** 2 + 1.0) / 2 + log_z
    draws = np.random.default_rng(seed).standard_normal((4000, k))
    log_mean = []
    for mu in mus:
        log_w = mu * draws - mu**2 / 2 + log_z  # log f(y) - log q(y)
        peak = log_w.max(-1)
        log_mean.append(np.mean(peak + np.log(np.mean(np.exp(log_w - peak[:, None]), -1))))
    plug_in = ((mus - mu_star) ** 2 + 1.0) / 2 + np.asarray(log_mean)
    return {"mu": mus, "mu_star": mu_star, "k": k, "nce": nce_loss, "nce_log_z": nce_log_z,
            "nll": nll, "plug_in": plug_in, "log_z": log_z}


# -- the pictures ---------------------------------------------------------------------------------


def pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit(
            'examples/gaussian_mean.py draws with matplotlib: pip install "progvi[examples]"'
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_errors(path, results, settings, names, args, mle):
    plt = pyplot()
    rows = sorted({s.dim for s in settings})
    cols = sorted({s.norm for s in settings})
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4.6 * len(cols), 3.7 * len(rows)),
                             squeeze=False, sharex=True)
    steps = args.every * np.arange(args.steps // args.every + 1)
    colors = plt.get_cmap("tab10")
    for setting in settings:
        ax = axes[rows.index(setting.dim)][cols.index(setting.norm)]
        for i, name in enumerate(names):
            cell = results[name][setting]
            curves = np.stack([run.curve for run in cell["runs"]])
            with np.errstate(all="ignore"):
                middle = np.exp(np.nanmean(np.log(curves), 0))  # geometric mean over seeds
            style = "--" if "plug-in" in name else "-"
            ax.plot(steps, middle, style, color=colors(i), lw=1.3, label=name)
            for run in cell["runs"]:
                if run.stopped is not None:
                    ax.plot(run.stopped, run.final, "x", color=colors(i), ms=7)
        ax.axhline(np.mean(mle[setting]), color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_title(f"{setting.label}  (noise N(0, I))", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("||mu - mu*||")
    handles, _ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8)
    fig.suptitle(
        f"Gaussian mean estimation by plain SGD: {args.batch_size} data points and "
        f"{args.num_noise} noise draws per step\n(geometric mean of {args.seeds} seeds at each "
        "method's tuned rate, printed in the table; x: a run stopped on inf/nan; dotted: the "
        "error of the sample mean)", fontsize=9)
    fig.tight_layout(rect=(0, 0.1 if len(rows) == 1 else 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_landscape(path, land):
    plt = pyplot()
    mus, mu_star = land["mu"], land["mu_star"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(mus, land["nce"], color="C0")
    axes[0].set_title("NCE loss, log Z at its best value for each mu", fontsize=10)
    axes[0].set_ylabel("population NCE loss")
    axes[1].plot(mus, land["nll"], color="C1", label="NLL (what MECO and the bound target)")
    axes[1].plot(mus, land["plug_in"], "--", color="C2",
                 label=f"E[plug-in NLL], K={land['k']} (its bias)")
    axes[1].set_title("negative log-likelihood", fontsize=10)
    axes[1].set_ylabel("population NLL")
    axes[1].legend(fontsize=8)
    for name, values, color in (("NCE", land["nce"], "C0"), ("NLL", land["nll"], "C1"),
                                (f"E[plug-in], K={land['k']}", land["plug_in"], "C2")):
        axes[2].plot(mus, np.abs(np.gradient(values, mus)), color=color, label=name)
    axes[2].set_yscale("log")
    axes[2].set_ylim(1e-5, 30)  # the NLL's gradient is 0 at mu*, off the bottom
    axes[2].set_title("|d loss / d mu|: the flatness", fontsize=10)
    axes[2].set_ylabel("|gradient|")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.axvline(mu_star, color="k", lw=0.8, ls=":")
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(f"mu (dotted: noise mean 0 and mu* = {mu_star:g})")
    fig.suptitle(f"1-D loss landscapes, data N({mu_star:g}, 1), noise N(0, 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Gaussian mean estimation with NCE, eNCE, plug-in, MECO and the tangent bound.")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=20, help="steps between error readings")
    parser.add_argument("--batch-size", type=int, default=16, help="data points per step")
    parser.add_argument("--num-noise", type=int, default=16, help="noise draws per step")
    parser.add_argument("--num-data", type=int, default=8192)
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds (at least 2)")
    parser.add_argument("--tuning-seeds", type=int, default=2,
                        help="seeds that choose the learning rate")
    parser.add_argument("--lrs", type=float, nargs="+",
                        default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--norms", type=float, nargs="+", default=[1.0, 2.0, 5.0],
                        help="the values of |mu*|")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.seeds, args.lrs, args.num_data = 300, 2, [0.1, 0.3], 2048
        args.tuning_seeds = 1
        args.dims, args.norms = [1], [1.0, 5.0]
    if args.seeds < 2 or args.tuning_seeds < 1:
        parser.error("--seeds must be at least 2 (for a spread) and --tuning-seeds at least 1")
    if args.steps % args.every:
        parser.error(f"--steps {args.steps} must be a multiple of --every {args.every}")
    return args


def main(argv=None) -> dict:
    """Tunes and trains every method in every setting, prints the tables, writes the PNGs."""
    args = parse_args(argv)
    pyplot()  # before any fit: without matplotlib, stop at once with the install command
    start = time.perf_counter()
    dims = args.dims
    settings = [Setting(d, n) for d in dims for n in args.norms]
    table = methods(args.num_noise)
    names = [m.name for m in table]
    key = jax.random.key(args.seed)
    tune = args.tuning_seeds
    total = len(table) * len(settings) * (len(args.lrs) * tune + args.seeds)
    from tqdm.auto import tqdm

    results = {name: {} for name in names}
    mle = {}
    with tqdm(total=total, disable=args.no_progress, unit="run") as bar:
        for s_index, setting in enumerate(settings):
            # The first seeds tune the rate, the others evaluate it; each has its own data.
            seed_keys = [jax.random.fold_in(jax.random.fold_in(key, s_index), i)
                         for i in range(tune + args.seeds)]
            datas = [draw_data(jax.random.fold_in(k, 0), setting, args.num_data)
                     for k in seed_keys]
            mle[setting] = [float(jnp.linalg.norm(x.mean(0) - setting.mu_star()))
                            for x in datas[tune:]]
            for m_index, method in enumerate(table):
                fit_keys = [jax.random.fold_in(k, 1 + m_index) for k in seed_keys]
                tuning = {}
                for lr in args.lrs:
                    scores = []
                    for k, x in zip(fit_keys[:tune], datas[:tune], strict=True):
                        scores.append(tail_score(train(k, method, setting, x, lr, args)))
                        bar.update()
                    tuning[lr] = float(np.mean(scores))
                lr = min(args.lrs, key=lambda r: tuning[r])
                runs = []
                for k, x in zip(fit_keys[tune:], datas[tune:], strict=True):
                    runs.append(train(k, method, setting, x, lr, args))
                    bar.update()
                finals = np.array([run.final for run in runs])
                results[method.name][setting] = {
                    "lr": lr, "runs": runs, "tuning": tuning,
                    "mean": float(finals.mean()), "sd": float(finals.std(ddof=1)),
                    "stopped": sum(run.stopped is not None for run in runs),
                }
    land = landscape()
    seconds = time.perf_counter() - start

    print(f"\nGaussian mean estimation: data N(mu*, I), noise N(0, I); plain SGD from mu = 0, "
          f"{args.steps} steps of {args.batch_size} data points and {args.num_noise} noise "
          "draws each (every method);")
    print(f"the rate chosen per method and setting from {args.lrs} on {tune} tuning seed(s) "
          f"(lowest mean log error over the last quarter); final ||mu - mu*||, mean ± sd over "
          f"{args.seeds} other seeds, @ the rate; † n: n runs stopped on inf/nan (error at the "
          "last finite params).")
    for dim in dims:
        row = [s for s in settings if s.dim == dim]
        print(f"\n{'d = ' + str(dim):<17}" + "".join(f"{f'|mu*| = {s.norm:g}':>28}" for s in row))
        for name in names:
            cells = []
            for s in row:
                c = results[name][s]
                mark = f" †{c['stopped']}" if c["stopped"] else ""
                cells.append(f"{c['mean']:.3g} ± {c['sd']:.2g} @{c['lr']:g}{mark}")
            print(f"{name:<17}" + "".join(f"{cell:>28}" for cell in cells))
        print(f"{'sample mean':<17}" + "".join(
            f"{f'{np.mean(mle[s]):.3g} ± {np.std(mle[s], ddof=1):.2g}':>28}" for s in row))
    nce_gap = land["nce"][np.argmin(np.abs(land["mu"] - 3.0))] - land["nce"].min()
    print(f"\n1-D landscape at mu* = {land['mu_star']:g}: the NCE loss (log Z at its best) at "
          f"mu = 3 is {nce_gap:.3g} above its minimum; the NLL is "
          f"{(3.0 - land['mu_star']) ** 2 / 2:.3g} above its own.")
    print(f"total time {seconds:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    error_png = args.out / "gaussian_mean_error.png"
    landscape_png = args.out / "gaussian_mean_landscape.png"
    plot_errors(error_png, results, settings, names, args, mle)
    plot_landscape(landscape_png, land)
    print(f"wrote {error_png} and {landscape_png}")
    rows = {name: {s.label: {k: v for k, v in cell.items() if k != "runs"}
                   | {"finals": [run.final for run in cell["runs"]]}
                   for s, cell in results[name].items()} for name in names}
    return {"rows": rows, "mle": {s.label: v for s, v in mle.items()}, "landscape": land,
            "pngs": [error_png, landscape_png], "seconds": seconds}


if __name__ == "__main__":
    main()
