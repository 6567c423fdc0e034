"""The ELBO gradient of a sigmoid belief net, discrete estimators: progvi against JAX and NumPyro.

The model is a discrete-latent VAE (a sigmoid belief net) on binary 784-pixel images: 20
Bernoulli latents per datapoint with a uniform prior, a decoder 20-200-784 and an encoder
784-200-20 (tanh hidden layers, Bernoulli logits). The data are the 8x8 digits of scikit-learn,
upscaled to 28x28 and binarized (no downloads); with ``--synthetic``, random binary vectors.
Every estimator is the gradient of the training loss of a batch, the mean negative ELBO over its
datapoints (each datapoint its own estimate: per-datapoint Rao-Blackwellization), written as a
progvi expectation program for one datapoint and as the same estimator in plain JAX:

* ``reinforce``: the score-function gradient, no baseline;
* ``moving_average``: REINFORCE with ``pv.train.moving_average_baseline(0.9)`` (the state a fit
  would carry, read at a fixed value for the timing);
* ``learned``: REINFORCE with ``pv.learned_baseline(b)``, ``b`` linear in the pixels, whose
  squared error (the auxiliary loss) is added to the loss, as `pv.make_step` does;
* ``vimco``: ``pv.vimco`` with K particles (default 5), the leave-one-out baselines of Mnih &
  Rezende (2016);
* ``mvd``: ``pv.mvd``, the measure-valued derivative, one pair of decoder evaluations per latent.

NumPyro's ``TraceGraph_ELBO`` (REINFORCE with plate-based Rao-Blackwellization; it has no
baselines) is timed next to ``reinforce``. Its estimator differs from progvi's REINFORCE by a
term of mean zero: it drops the path derivative of ``-log q(z | x)`` (see
`tracegraph_surrogate`), so it is checked against a hand-written version of that form.

How it measures (as ``adev_vae_grad.py`` does): each gradient function is jitted, its first call
(trace, compile, run) reported; then all are called in turn, round after round, each call
synchronized with ``jax.block_until_ready``, the order rotating every round, and the table gives
the median per call and ``ratio = progvi / hand-written``. Target (DESIGN.md §5): ratio <= 1.05.

The check, before timing: each progvi gradient against its hand-written estimator fed the very
draws the program made at the same key, read back with a probe program that has the same site
(address, distribution and strategy) and returns the draw; NumPyro's gradient is checked the same
way, its guide's draw substituted. The same comparison with another key's draws is reported: it
fails by an error of order 1, so the check discriminates.

Variance: at a fixed batch (``--variance-batch``, default 64) and fixed params, the standard
deviation of one gradient coordinate (the bias of the encoder's first latent logit) over
``--estimates`` (default 200) estimates per estimator, and variance x time per call at that
batch: the variance each estimator leaves per unit of time (lower is better). The learned
baseline is first fitted at those params (its own params only), the moving average run to its
fixed point there, so that both are the baselines a training run would have.

Usage:
  python benchmarks/sbn_grad.py                     # batch 64 ... 16384, writes results/
  python benchmarks/sbn_grad.py --quick --out /tmp/sbn.md   # a few seconds, timings noisy
  python benchmarks/sbn_grad.py --batch-sizes 64 1024 --note "..."
"""

from __future__ import annotations

import argparse
import collections
import datetime
import math
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro import handlers
from numpyro.infer import TraceGraph_ELBO

import progvi as pv

PIXELS, HIDDEN, LATENT = 784, 200, 20
BATCH_SIZES = (64, 256, 1024, 4096, 16384)
PARTICLES = 5
DECAY = 0.9
TARGET_RATIO = 1.05
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
LOG_PRIOR = LATENT * math.log(0.5)  # log p(z) under the uniform prior, the same for every z


# --- the model: shared by every estimator --------------------------------------------------------


def init_params(key) -> dict:
    """Encoder, decoder and baseline weights, scaled by 1/sqrt(fan-in)."""

    def dense(key, fan_in, fan_out):
        return {"w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in),
                "b": jnp.zeros(fan_out)}

    keys = jax.random.split(key, 4)
    return {
        "enc_hidden": dense(keys[0], PIXELS, HIDDEN),
        "enc_logits": dense(keys[1], HIDDEN, LATENT),
        "dec_hidden": dense(keys[2], LATENT, HIDDEN),
        "dec_logits": dense(keys[3], HIDDEN, PIXELS),
        "baseline": {"w": jnp.zeros(PIXELS), "b": jnp.zeros(())},
    }


def _dense(layer, x):
    return x @ layer["w"] + layer["b"]


def encode(params, x):
    """Bernoulli logits of q(z | x)."""
    return _dense(params["enc_logits"], jnp.tanh(_dense(params["enc_hidden"], x)))


def decode(params, z):
    """Bernoulli logits of p(x | z)."""
    return _dense(params["dec_logits"], jnp.tanh(_dense(params["dec_hidden"], z)))


def bernoulli_log_prob(x, logits):
    """log Bernoulli(x; sigmoid(logits)), summed over the last axis."""
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def elbo_terms(params, x, z, logits):
    """log p(x | z) + log p(z) - log q(z | x) at a draw z (any leading axes)."""
    return bernoulli_log_prob(x, decode(params, z)) + LOG_PRIOR - bernoulli_log_prob(z, logits)


def baseline_of(params, x):
    """The learned baseline: linear in the pixels (data, so no other params are trained by it)."""
    return _dense(params["baseline"], x)


def digits(key, n: int) -> jax.Array:
    """n binarized 28x28 digits: scikit-learn's 8x8 digits upscaled, drawn with replacement."""
    from sklearn.datasets import load_digits

    images = jnp.asarray(load_digits().images, jnp.float32) / 16.0
    upscaled = jax.image.resize(images, (images.shape[0], 28, 28), "linear")
    binary = (upscaled > 0.5).astype(jnp.float32).reshape(-1, PIXELS)
    return binary[jax.random.randint(key, (n,), 0, binary.shape[0])]


def random_images(key, n: int) -> jax.Array:
    return jax.random.bernoulli(key, 0.3, (n, PIXELS)).astype(jnp.float32)


# --- progvi: one program per datapoint -----------------------------------------------------------


def _q(params, x):
    return dist.Bernoulli(logits=encode(params, x)).to_event(1)


def site_program(strategy_of: Callable) -> pv.Expectation:
    """The ELBO of one datapoint, its site drawn with ``strategy_of(params, x)``."""

    @pv.expectation
    def elbo(params, x):
        logits = encode(params, x)
        # One site of 20 independent Bernoullis (batch shape (20,): pv.mvd perturbs each).
        z = pv.sample("z", dist.Bernoulli(logits=logits), strategy=strategy_of(params, x))
        return elbo_terms(params, x, z, logits)

    return elbo


MOVING = pv.train.moving_average_baseline(DECAY)
PROGRAMS = {
    "reinforce": site_program(lambda p, x: pv.reinforce),
    "moving_average": site_program(lambda p, x: pv.reinforce(baseline=MOVING)),
    "learned": site_program(
        lambda p, x: pv.reinforce(baseline=pv.learned_baseline(baseline_of(p, x)))),
    "mvd": site_program(lambda p, x: pv.mvd),
}


@pv.gen
def model(params):
    z = pv.sample("z", dist.Bernoulli(probs=0.5 * jnp.ones(LATENT)).to_event(1))
    pv.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(1))


@pv.gen
def guide(params, x):
    pv.sample("z", _q(params, x))


def vimco_program(num_particles: int) -> pv.Expectation:
    @pv.expectation
    def vimco(params, x):
        # numpyro's Bernoulli draws integers; the observation is given as one too.
        obs = {"x": x.astype(jnp.int32)}
        return pv.vimco(model, guide, obs, num_particles, model_args=(params,),
                        guide_args=(params, x))

    return vimco


def progvi_grad(program: pv.Expectation, states: dict | None, evaluate: bool):
    """``(key, params, xs) -> gradient`` of mean(-ELBO) + mean(auxiliary loss), per datapoint.

    With `evaluate`, the program runs from the estimator states `states` and its auxiliary loss
    (a learned baseline's squared error) is added, as `pv.make_step` does; otherwise it is
    `estimate`, which is what ``program.grad`` differentiates.
    """

    def grad(key, params, xs):
        keys = jax.random.split(key, xs.shape[0])

        def loss(p):
            if not evaluate:
                values = jax.vmap(lambda k, x: program.estimate(k, p, x))(keys, xs)
                return -jnp.mean(values)
            out = jax.vmap(lambda k, x: program.evaluate(k, states, p, x))(keys, xs)
            return -jnp.mean(out.value) + jnp.mean(out.aux_loss)

        return jax.grad(loss)(params)

    return grad


# --- hand-written JAX ----------------------------------------------------------------------------
# Each estimator as a surrogate loss whose gradient at the draws is the estimate; the draws are
# an argument, so that the check can feed the program's own.


def draw_z(key, params, xs, shape=()):
    keys = jax.random.split(key, xs.shape[0])
    probs = jax.nn.sigmoid(encode(params, xs))

    def one(k, p):
        return jax.random.bernoulli(k, p, (*shape, LATENT)).astype(jnp.float32)

    return jax.vmap(one)(keys, probs)


def reinforce_surrogate(params, xs, z, baseline=0.0):
    logits = encode(params, xs)
    f = elbo_terms(params, xs, z, logits)
    score = bernoulli_log_prob(z, logits)
    return -jnp.mean(f + jax.lax.stop_gradient(f - baseline) * score)


def tracegraph_surrogate(params, xs, z):
    """NumPyro's form of REINFORCE: the same, without the path derivative of -log q(z | x).

    TraceGraph_ELBO stops the gradient of a non-reparameterized guide site's log density in the
    ELBO's value; the term it drops, the mean of -grad log q(z | x), is zero in expectation.
    """
    logits = encode(params, xs)
    log_q = bernoulli_log_prob(z, logits)
    f = bernoulli_log_prob(xs, decode(params, z)) + LOG_PRIOR - jax.lax.stop_gradient(log_q)
    return -jnp.mean(f + jax.lax.stop_gradient(f) * log_q)


def learned_surrogate(params, xs, z):
    logits = encode(params, xs)
    f = elbo_terms(params, xs, z, logits)
    b = baseline_of(params, xs)
    score = bernoulli_log_prob(z, logits)
    objective = -jnp.mean(f + jax.lax.stop_gradient(f - b) * score)
    return objective + jnp.mean((jax.lax.stop_gradient(f) - b) ** 2)


def mvd_surrogate(params, xs, z):
    """The path gradient at z plus, per latent j, dp_j times f(z with z_j = 1) - f(z_j = 0)."""
    logits = encode(params, xs)
    f = elbo_terms(params, xs, z, logits)
    fixed = jax.lax.stop_gradient(params)
    fixed_logits = jax.lax.stop_gradient(logits)
    eye = jnp.eye(LATENT, dtype=bool)

    def at(value):  # (B, LATENT): f with latent j set to `value`, for each j
        zs = jnp.where(eye[None], value, z[:, None, :])
        return elbo_terms(fixed, xs[:, None, :], zs, fixed_logits[:, None, :])

    differences = jax.lax.stop_gradient(at(1.0) - at(0.0))
    return -jnp.mean(f + jnp.sum(jax.nn.sigmoid(logits) * differences, -1))


def vimco_surrogate(params, xs, z):
    """z: (B, K, LATENT). The bound plus each particle's score times L - L_{-k}."""
    logits = encode(params, xs)[:, None, :]
    count = z.shape[1]
    log_w = elbo_terms(params, xs[:, None, :], z, logits)
    bound = jax.nn.logsumexp(log_w, -1) - math.log(count)
    others = (jnp.sum(log_w, -1, keepdims=True) - log_w) / (count - 1)
    held_out = jnp.where(jnp.eye(count, dtype=bool)[None], others[:, :, None], log_w[:, None, :])
    leave_one_out = jax.nn.logsumexp(held_out, -1) - math.log(count)
    score = bernoulli_log_prob(z, logits)
    weights = jax.lax.stop_gradient(bound[:, None] - leave_one_out)
    return -jnp.mean(bound + jnp.sum(weights * score, -1))


def handwritten(name: str, average: float, num_particles: int):
    """``(key, params, xs) -> gradient`` and ``(params, xs, z) -> gradient`` of `name`."""
    surrogates = {
        "reinforce": reinforce_surrogate,
        "moving_average": lambda p, xs, z: reinforce_surrogate(p, xs, z, average),
        "learned": learned_surrogate,
        "mvd": mvd_surrogate,
        "vimco": vimco_surrogate,
    }
    at_draws = jax.grad(surrogates[name])
    shape = (num_particles,) if name == "vimco" else ()

    def grad(key, params, xs):
        return at_draws(params, xs, draw_z(key, params, xs, shape))

    return grad, at_draws


# --- NumPyro -------------------------------------------------------------------------------------


def numpyro_model(params, xs):
    with numpyro.plate("data", xs.shape[0]):
        z = numpyro.sample("z", dist.Bernoulli(probs=0.5 * jnp.ones(LATENT)).to_event(1))
        numpyro.sample("x", dist.Bernoulli(logits=decode(params, z)).to_event(1), obs=xs)


def numpyro_guide(params, xs):
    with numpyro.plate("data", xs.shape[0]):
        numpyro.sample("z", _q(params, xs))


def numpyro_grad(key, params, xs, z=None):
    raw = jax.random.key_data(key)  # numpyro takes raw uint32 keys
    guide = numpyro_guide
    if z is not None:  # the draws given: substituted after the guide's own seed
        guide = handlers.substitute(handlers.seed(numpyro_guide, raw), data={"z": z})
    # TraceGraph_ELBO's loss is the summed -ELBO of the batch: divided by B, the mean.
    return jax.grad(lambda p: TraceGraph_ELBO().loss(raw, {}, numpyro_model, guide, p, xs)
                    / xs.shape[0])(params)


# --- the estimators ------------------------------------------------------------------------------


class Estimator(NamedTuple):
    progvi: Callable  # (key, params, xs) -> gradient
    handwritten: Callable  # (key, params, xs) -> gradient
    at_draws: Callable  # (params, xs, z) -> the hand-written gradient at the draws z
    probe: pv.Expectation  # (params, x) -> the draw the program makes at a key


def _probe(strategy_of):
    @pv.expectation
    def probe(params, x):
        return pv.sample("z", dist.Bernoulli(logits=encode(params, x)),
                         strategy=strategy_of(params, x))

    return probe


def _vimco_probe(num_particles):
    @pv.expectation
    def probe(params, x):
        return pv.particles(lambda: pv.simulate(guide, params, x).choices["z"], num_particles)

    return probe


def estimators(states: dict, num_particles: int) -> dict[str, Estimator]:
    """Every estimator at the moving-average state `states` (a dict {"z": state})."""
    average = float(MOVING.read(states["z"]))
    probes = {
        "reinforce": _probe(lambda p, x: pv.reinforce),
        "mvd": _probe(lambda p, x: pv.mvd),
        "vimco": _vimco_probe(num_particles),
    }
    probes["moving_average"] = probes["learned"] = probes["reinforce"]
    programs = {**PROGRAMS, "vimco": vimco_program(num_particles)}
    out = {}
    for name in ("reinforce", "moving_average", "learned", "vimco", "mvd"):
        hand, at_draws = handwritten(name, average, num_particles)
        stateful = name in ("moving_average", "learned")
        out[name] = Estimator(progvi_grad(programs[name], states if stateful else None, stateful),
                              hand, at_draws, probes[name])
    return out


# --- the gradient check --------------------------------------------------------------------------


class Check(NamedTuple):
    name: str
    max_relative_error: float  # max over leaves of max|g - g_hand| / max|g_hand|
    other_draws_error: float  # the same with the draws of another key: must be large
    passed: bool


def _relative_error(grad, reference) -> float:
    errors = jax.tree.map(
        lambda g, r: float(jnp.max(jnp.abs(g - r)) / (jnp.max(jnp.abs(r)) + 1e-30)),
        grad, reference)
    return max(jax.tree.leaves(errors))


def program_draws(probe, key, params, xs):
    keys = jax.random.split(key, xs.shape[0])
    return jax.vmap(lambda k, x: probe.estimate(k, params, x))(keys, xs)


# VIMCO's gradient as progvi forms it, L * Σ_k score_k - Σ_k L_{-k} score_k, cancels in float32
# where the hand-written Σ_k (L - L_{-k}) score_k does not: with |L| of some hundred nats the
# two differ by ~1e-4 of the gradient's scale (and by ~1e-12 in float64).
TOLERANCES = {"vimco": 1e-3}


def check_gradients(key, params, xs, ests, tolerance: float = 1e-4) -> list[Check]:
    checks = []
    other = jax.random.fold_in(key, 99)
    for name, est in ests.items():
        grad = jax.jit(est.progvi)(key, params, xs)
        draws = jax.jit(lambda k, e=est: program_draws(e.probe, k, params, xs))
        at_draws = jax.jit(est.at_draws)
        error = _relative_error(grad, at_draws(params, xs, draws(key)))
        other_error = _relative_error(grad, at_draws(params, xs, draws(other)))
        checks.append(Check(name, error, other_error,
                            error <= TOLERANCES.get(name, tolerance)))
    # NumPyro's TraceGraph_ELBO with the same draws substituted into its guide, against the
    # hand-written form of its estimator.
    reinforce = ests["reinforce"]
    at_draws = jax.jit(jax.grad(tracegraph_surrogate))
    draws = program_draws(reinforce.probe, key, params, xs)
    grad = jax.jit(numpyro_grad)(key, params, xs, draws)
    other_draws = program_draws(reinforce.probe, other, params, xs)
    error = _relative_error(grad, at_draws(params, xs, draws))
    other_error = _relative_error(grad, at_draws(params, xs, other_draws))
    checks.append(Check("numpyro (reinforce)", error, other_error, error <= tolerance))
    return checks


# --- baselines at the params of the variance measurement -----------------------------------------


def fitted_baselines(key, params, data, steps: int, batch_size: int):
    """The learned baseline fitted (its params only) and the moving average's state at `params`."""
    frozen = jax.tree.map(lambda _: "frozen", params)
    labels = {**frozen, "baseline": jax.tree.map(lambda _: "train", params["baseline"])}
    optimizer = optax.multi_transform({"train": optax.adam(0.01), "frozen": optax.set_to_zero()},
                                      labels)
    k_learned, k_average = jax.random.split(key)
    average = pv.fit(k_average, PROGRAMS["moving_average"], params, optax.set_to_zero(),
                     direction="maximize", num_steps=max(steps // 4, 20), data=data,
                     batch_size=batch_size, per_datapoint=True, progress=False)
    state = average.estimator_state["z"]
    # The learned baseline starts from the average (the ELBO is some hundred nats, far for
    # adam's steps from 0) and learns how the ELBO varies across datapoints.
    start = {**params, "baseline": {"w": params["baseline"]["w"],
                                    "b": jnp.asarray(MOVING.read(state))}}
    learned = pv.fit(k_learned, PROGRAMS["learned"], start, optimizer, direction="maximize",
                     num_steps=steps, data=data, batch_size=batch_size, per_datapoint=True,
                     progress=False)
    return learned.params, {"z": state}


# --- timing --------------------------------------------------------------------------------------


class Row(NamedTuple):
    batch_size: int
    reps: int
    median_ms: dict[str, float]  # by implementation: "<estimator>/progvi", "<estimator>/jax", ...
    compile_s: dict[str, float]

    def ratio(self, name: str) -> float:
        return self.median_ms[f"{name}/progvi"] / self.median_ms[f"{name}/jax"]


def _timed_call(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def implementations(ests: dict[str, Estimator]) -> dict[str, Callable]:
    fns = {}
    for name, est in ests.items():
        fns[f"{name}/progvi"] = est.progvi
        fns[f"{name}/jax"] = est.handwritten
    fns["reinforce/numpyro"] = numpyro_grad
    return fns


def time_batch_size(batch_size, reps, budget_s, jitted, params, xs, key) -> Row:
    """Median time per call of each jitted gradient, interleaved, after a first call each."""
    compile_s = {name: _timed_call(fn, key, params, xs) for name, fn in jitted.items()}
    round_s = sum(_timed_call(fn, key, params, xs) for fn in jitted.values())
    reps = max(3, min(reps, int(budget_s / max(round_s, 1e-9))))
    times = collections.defaultdict(list)
    names = list(jitted)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed_call(jitted[name], key, params, xs))
    return Row(batch_size, reps, {n: 1e3 * statistics.median(t) for n, t in times.items()},
               compile_s)


# --- variance ------------------------------------------------------------------------------------


def coordinate(grad) -> jax.Array:
    """The gradient coordinate whose spread is reported: the first latent logit's bias."""
    return grad["enc_logits"]["b"][0]


def spreads(jitted, params, xs, key, count: int) -> dict[str, float]:
    """The standard deviation of `coordinate` over `count` estimates, per progvi estimator and
    for NumPyro; the jitted gradients of the timing, compiled at this batch already."""
    keys = jax.random.split(key, count)
    out = {}
    for name, fn in jitted.items():
        if name.endswith("/jax"):
            continue  # the same estimator as progvi's (checked above)
        values = [coordinate(fn(k, params, xs)) for k in keys]
        label = "numpyro (reinforce)" if name.endswith("/numpyro") else name.split("/")[0]
        out[label] = float(np.std(np.asarray(values, np.float64), ddof=1))
    return out


# --- report --------------------------------------------------------------------------------------

NAMES = ("reinforce", "moving_average", "learned", "vimco", "mvd")


def timing_table(rows: Sequence[Row]) -> str:
    header = ["batch"] + [f"{n} ms (progvi / JAX), ratio" for n in NAMES] + [
        "NumPyro TraceGraph ms, / progvi reinforce", "reps"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        m = r.median_ms
        cells = [str(r.batch_size)]
        cells += [f"{m[f'{n}/progvi']:.2f} / {m[f'{n}/jax']:.2f}, {r.ratio(n):.3f}" for n in NAMES]
        numpyro_ms = m["reinforce/numpyro"]
        cells.append(f"{numpyro_ms:.2f}, {numpyro_ms / m['reinforce/progvi']:.2f}x")
        cells.append(str(r.reps))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compile_table(rows: Sequence[Row]) -> str:
    names = list(rows[0].compile_s)
    lines = ["| batch | " + " | ".join(names) + " |", "|" + "---:|" * (len(names) + 1)]
    for r in rows:
        lines.append(f"| {r.batch_size} | " + " | ".join(f"{r.compile_s[n]:.2f}" for n in names)
                     + " |")
    return "\n".join(lines)


def variance_table(stds: dict[str, float], row: Row) -> str:
    lines = ["| estimator | std of the coordinate | variance / REINFORCE's | progvi ms per call "
             "| variance x ms |", "|---|---:|---:|---:|---:|"]
    reference = stds["reinforce"] ** 2
    for name, std in stds.items():
        key = "reinforce/numpyro" if name.startswith("numpyro") else f"{name}/progvi"
        ms = row.median_ms[key]
        lines.append(f"| {name} | {std:.4g} | {std**2 / reference:.3g} | {ms:.2f} "
                     f"| {std**2 * ms:.4g} |")
    return "\n".join(lines)


def environment() -> dict[str, str]:
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind} (x{jax.device_count()})",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "progvi": pv.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def report(rows, checks, stds, variance_row, args, command) -> str:
    misses = [f"{n} at batch {r.batch_size} ({r.ratio(n):.3f})"
              for r in rows for n in NAMES if r.ratio(n) > TARGET_RATIO]
    verdict = (f"All ratios are within the target of {TARGET_RATIO}." if not misses else
               f"Above the target of {TARGET_RATIO}: " + "; ".join(misses) + ".")
    check_lines = [
        f"- {c.name}: max relative error {c.max_relative_error:.1e} "
        f"({'pass' if c.passed else 'FAIL'}); with another key's draws {c.other_draws_error:.2f}"
        for c in checks
    ]
    data = "random binary vectors" if args.synthetic else "scikit-learn digits, 28x28, binarized"
    return "\n".join([
        "# Sigmoid belief net ELBO gradient with discrete estimators: progvi vs JAX and NumPyro",
        "",
        *[f"- {k}: {v}" for k, v in environment().items()],
        f"- command: `{command}`",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        f"Gradient of the mean negative ELBO of a batch ({data}; 20 Bernoulli latents, encoder "
        f"784-200-20, decoder 20-200-784), one estimate per datapoint. VIMCO with K = "
        f"{args.particles}. Median time per call of the jitted gradient (synchronized, "
        "interleaved); ratio = progvi / hand-written JAX of the same estimator.",
        "",
        timing_table(rows),
        "",
        verdict,
        "",
        "First call (trace + compile + run), seconds:",
        "",
        compile_table(rows),
        "",
        "Each progvi gradient against its hand-written estimator fed the program's own draws:",
        "",
        *check_lines,
        "",
        f"Spread of one gradient coordinate (the bias of the first latent logit) over "
        f"{args.estimates} estimates at batch {variance_row.batch_size}, fixed params, with the "
        "learned baseline fitted and the moving average settled there; time per call at that "
        "batch from the timing above:",
        "",
        variance_table(stds, variance_row),
        "",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help=f"default {' '.join(map(str, BATCH_SIZES))} (--quick: 8 16)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed rounds per batch size (default 100; --quick: 3)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed rounds per batch size at most (default 120; "
                        "--quick: 2)")
    parser.add_argument("--particles", type=int, default=PARTICLES, help="VIMCO's K")
    parser.add_argument("--estimates", type=int, default=None,
                        help="estimates per estimator for the spread (default 200; --quick: 20)")
    parser.add_argument("--variance-batch", type=int, default=None,
                        help="batch of the spread (default 64; --quick: the first batch size)")
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="steps fitting the learned baseline (default 400; --quick: 10)")
    parser.add_argument("--check-batch", type=int, default=None,
                        help="batch of the gradient check (default 16; --quick: 4)")
    parser.add_argument("--synthetic", action="store_true",
                        help="random binary vectors instead of the upscaled digits")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a run in seconds, to see that it works (timings noise)")
    parser.add_argument("--note", default="", help="a line about the machine, for the report")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="markdown output (default: results/sbn_grad_<backend>.md)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"batch_sizes": [8, 16] if quick else list(BATCH_SIZES), "reps": 3 if quick else 100,
                "budget": 2.0 if quick else 120.0, "estimates": 20 if quick else 200,
                "baseline_steps": 10 if quick else 400, "check_batch": 4 if quick else 16}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.variance_batch is None:
        args.variance_batch = args.batch_sizes[0] if quick else 64
    return args


def main(argv: Sequence[str] | None = None):
    """Runs the check, the timing and the spreads; returns (rows, checks, spreads, report)."""
    args = parse_args(argv)
    data_key, param_key, noise_key, fit_key, spread_key = jax.random.split(jax.random.key(0), 5)
    images = random_images if args.synthetic else digits
    params = init_params(param_key)
    pool = images(data_key, max(256, args.variance_batch))
    params, states = fitted_baselines(fit_key, params, pool, args.baseline_steps,
                                      min(64, pool.shape[0]))
    ests = estimators(states, args.particles)
    checks = check_gradients(noise_key, params, pool[:args.check_batch], ests)
    for c in checks:
        print(f"check {c.name}: {c.max_relative_error:.1e} (other draws "
              f"{c.other_draws_error:.2f})", flush=True)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        raise AssertionError(f"progvi's gradients differ from the hand-written ones: {failed}")
    jitted = {name: jax.jit(fn) for name, fn in implementations(ests).items()}
    rows = []
    sizes = sorted(set(args.batch_sizes) | {args.variance_batch})
    for batch_size in sizes:
        xs = images(jax.random.fold_in(data_key, batch_size), batch_size)
        rows.append(time_batch_size(batch_size, args.reps, args.budget, jitted, params, xs,
                                    noise_key))
        table = timing_table(rows).splitlines()
        if len(rows) == 1:
            print("\n".join(table[:2]))
        print(table[-1], flush=True)
    variance_row = next(r for r in rows if r.batch_size == args.variance_batch)
    variance_xs = images(jax.random.fold_in(data_key, args.variance_batch), args.variance_batch)
    stds = spreads(jitted, params, variance_xs, spread_key, args.estimates)
    shown_rows = [r for r in rows if r.batch_size in args.batch_sizes]
    command = " ".join(["python benchmarks/sbn_grad.py",
                        *(sys.argv[1:] if argv is None else argv)])
    text = report(shown_rows, checks, stds, variance_row, args, command)
    print("\n" + text)
    out = args.out or RESULTS / f"sbn_grad_{jax.default_backend()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return shown_rows, checks, stds, text


if __name__ == "__main__":
    main()
