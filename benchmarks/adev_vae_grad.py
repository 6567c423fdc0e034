"""The reparameterized ELBO gradient of a VAE: progvi expectation programs against hand-written JAX.

The model is a Gaussian-latent VAE on binary 784-pixel images: an encoder 784-200-(10 mean,
10 log-scale) and a decoder 10-200-784, tanh hidden layers, Bernoulli likelihood through logits.
The estimator is the single-sample reparameterized gradient of the negative ELBO averaged over a
batch, with the KL term sampled (``log q(z|x) - log p(z)``), written three ways:

* ``handwritten``: plain JAX, ``eps = jax.random.normal(key, (B, 10))``, ``jax.grad`` of the mean;
* ``per_datapoint``: one expectation program per datapoint, vmapped over the batch and averaged
  before differentiation (the recommended idiom);
* ``batched``: one expectation program over the whole batch (one site of batch shape ``(B, 10)``).

All three call the same loss functions below, so the programs differ only in where the noise comes
from and in how the gradient is formed. Each gradient function is jitted and warmed up (the first
call, which traces and compiles, is reported), then the three are called in turn, ``reps`` times,
each call synchronized with ``jax.block_until_ready``; the order rotates every round so that load
on the machine affects them alike. The table reports the median time per call and the ratio of
each progvi estimator to the hand-written one.

Before timing, the gradients are checked against the hand-written estimator fed the very noise the
programs drew: the noise is read back by running a program with the same prefix (same encoder,
same site) on zeroed encoder weights, where the site's draw ``0 + eps * exp(0)`` is ``eps``
itself.

Run ``python benchmarks/adev_vae_grad.py --help`` for the options; the table is printed and
written to ``benchmarks/results/adev_vae_grad_<backend>.md``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import math
import os
import pathlib
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import progvi as pv

PIXELS, HIDDEN, LATENT = 784, 200, 10
BATCH_SIZES = (64, 256, 1024, 4096, 16384)
TARGET_RATIO = 1.05
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


# --- the model: shared by all three estimators --------------------------------------------------


def init_params(key) -> dict:
    """Encoder and decoder weights, scaled by 1/sqrt(fan-in)."""

    def dense(key, fan_in, fan_out):
        w = jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in)
        return {"w": w, "b": jnp.zeros(fan_out)}

    keys = jax.random.split(key, 5)
    return {
        "enc_hidden": dense(keys[0], PIXELS, HIDDEN),
        "enc_mean": dense(keys[1], HIDDEN, LATENT),
        "enc_log_scale": dense(keys[2], HIDDEN, LATENT),
        "dec_hidden": dense(keys[3], LATENT, HIDDEN),
        "dec_logits": dense(keys[4], HIDDEN, PIXELS),
    }


def random_images(key, batch_size: int) -> jax.Array:
    """Random binary 784-vectors standing in for binarized MNIST."""
    return jax.random.bernoulli(key, 0.3, (batch_size, PIXELS)).astype(jnp.float32)


def _dense(layer, x):
    return x @ layer["w"] + layer["b"]


def encode(params, x):
    """Mean and log-scale of q(z | x)."""
    h = jnp.tanh(_dense(params["enc_hidden"], x))
    return _dense(params["enc_mean"], h), _dense(params["enc_log_scale"], h)


def decode(params, z):
    """Bernoulli logits of p(x | z)."""
    return _dense(params["dec_logits"], jnp.tanh(_dense(params["dec_hidden"], z)))


def normal_log_density(z, mean, log_scale):
    """log N(z; mean, exp(log_scale)^2), summed over the last axis."""
    u = (z - mean) * jnp.exp(-log_scale)
    return jnp.sum(-0.5 * u**2 - log_scale - 0.5 * math.log(2 * math.pi), axis=-1)


def bernoulli_log_likelihood(x, logits):
    """log Bernoulli(x; sigmoid(logits)), summed over the last axis."""
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def negative_elbo_terms(params, x, z, mean, log_scale):
    """-(log p(x | z) + log p(z) - log q(z | x)) at a draw z, per datapoint."""
    log_prior = normal_log_density(z, 0.0, 0.0)
    log_q = normal_log_density(z, mean, log_scale)
    return -(bernoulli_log_likelihood(x, decode(params, z)) + log_prior - log_q)


# --- hand-written JAX ----------------------------------------------------------------------------


def handwritten_loss(params, xs, eps):
    """Mean negative ELBO at the reparameterized draw ``z = mean + eps * scale``."""
    mean, log_scale = encode(params, xs)
    z = mean + eps * jnp.exp(log_scale)
    return jnp.mean(negative_elbo_terms(params, xs, z, mean, log_scale))


def handwritten_grad(key, params, xs):
    eps = jax.random.normal(key, (xs.shape[0], LATENT))
    return jax.grad(handwritten_loss)(params, xs, eps)


# --- progvi --------------------------------------------------------------------------------------


def _latent(params, x):
    mean, log_scale = encode(params, x)
    return pv.sample("z", dist.Normal(mean, jnp.exp(log_scale))), mean, log_scale


@pv.expectation
def negative_elbo(params, x):
    """-ELBO of one datapoint (x of shape (784,)); z is reparameterized by default."""
    z, mean, log_scale = _latent(params, x)
    return negative_elbo_terms(params, x, z, mean, log_scale)


@pv.expectation
def batched_negative_elbo(params, xs):
    """Mean -ELBO of a batch (xs of shape (B, 784)) with one site of batch shape (B, 10)."""
    z, mean, log_scale = _latent(params, xs)
    return jnp.mean(negative_elbo_terms(params, xs, z, mean, log_scale))


@pv.expectation
def latent_draw(params, x):
    """The site of the programs above and nothing after it: returns the draw itself."""
    return _latent(params, x)[0]


def per_datapoint_grad(key, params, xs):
    keys = jax.random.split(key, xs.shape[0])

    def mean_estimate(p):
        return jnp.mean(jax.vmap(lambda k, x: negative_elbo.estimate(k, p, x))(keys, xs))

    return jax.grad(mean_estimate)(params)


def batched_grad(key, params, xs):
    return batched_negative_elbo.grad(key, params, xs)


IMPLEMENTATIONS: dict[str, Callable] = {
    "handwritten": handwritten_grad,
    "per_datapoint": per_datapoint_grad,
    "batched": batched_grad,
}


# --- diagnostics: hand-written JAX deriving its noise keys as the programs do ---------------------
# An expectation program draws site i from ``fold_in(key, i)``, and the per-datapoint idiom splits
# the key once per datapoint. These variants add exactly that key work to the hand-written
# estimator, so that comparing them with the programs separates the cost of the keys from any
# other overhead. (The index folded in does not change the cost; 0 stands for it.)


def handwritten_folded_key_grad(key, params, xs):
    eps = jax.random.normal(jax.random.fold_in(key, 0), (xs.shape[0], LATENT))
    return jax.grad(handwritten_loss)(params, xs, eps)


def handwritten_split_keys_grad(key, params, xs):
    keys = jax.random.split(key, xs.shape[0])
    eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (LATENT,)))(keys)
    return jax.grad(handwritten_loss)(params, xs, eps)


DIAGNOSTICS: dict[str, Callable] = {
    "handwritten_split_keys": handwritten_split_keys_grad,
    "handwritten_folded_key": handwritten_folded_key_grad,
}


# --- the gradient check --------------------------------------------------------------------------


class Check(NamedTuple):
    name: str  # the progvi estimator compared with the hand-written one
    max_relative_error: float  # max over leaves of max|g - g_hand| / max|g_hand|
    passed: bool


def _noise(key, params, xs, per_datapoint: bool):
    """The standard-normal noise the programs draw at `key`: their site on a zeroed encoder."""
    zeroed = jax.tree.map(jnp.zeros_like, params)
    if per_datapoint:
        keys = jax.random.split(key, xs.shape[0])
        return jax.vmap(lambda k, x: latent_draw.estimate(k, zeroed, x))(keys, xs)
    return latent_draw.estimate(key, zeroed, xs)


def _relative_error(grad, reference) -> float:
    errors = jax.tree.map(
        lambda g, r: float(jnp.max(jnp.abs(g - r)) / (jnp.max(jnp.abs(r)) + 1e-30)),
        grad,
        reference,
    )
    return max(jax.tree.leaves(errors))


def check_gradients(key, params, xs, tolerance: float = 1e-4) -> list[Check]:
    """Each progvi gradient against the hand-written one given the same noise."""
    hand = jax.jit(jax.grad(handwritten_loss))
    checks = []
    for name, per_datapoint in (("per_datapoint", True), ("batched", False)):
        grad = jax.jit(IMPLEMENTATIONS[name])(key, params, xs)
        reference = hand(params, xs, _noise(key, params, xs, per_datapoint))
        if jax.tree.structure(grad) != jax.tree.structure(reference):
            raise AssertionError(f"{name}: gradient structure differs from the hand-written one")
        for g, r in zip(jax.tree.leaves(grad), jax.tree.leaves(reference), strict=True):
            if g.shape != r.shape or not bool(jnp.all(jnp.isfinite(g))):
                raise AssertionError(f"{name}: gradient leaf of shape {g.shape} is not finite "
                                     f"or differs in shape from {r.shape}")
        error = _relative_error(grad, reference)
        checks.append(Check(name, error, error <= tolerance))
    return checks


# --- timing --------------------------------------------------------------------------------------


class Row(NamedTuple):
    batch_size: int
    reps: int
    median_ms: dict[str, float]  # median time per call, by implementation
    compile_s: dict[str, float]  # first call (trace + compile + run), by implementation

    def ratio(self, name: str) -> float:
        return self.median_ms[name] / self.median_ms["handwritten"]


def _timed_call(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def time_batch_size(
    batch_size: int, reps: int, budget_s: float, implementations: dict[str, Callable], seed: int = 0
) -> Row:
    """Median time per call of each implementation, interleaved, after a warm-up call."""
    data_key, param_key, noise_key = jax.random.split(jax.random.key(seed), 3)
    params, xs = init_params(param_key), random_images(data_key, batch_size)
    # Fill the GEMM autotuning cache (a GPU tunes each new matmul shape once per process) with a
    # function of the same shapes, so that no implementation's first call pays for it alone.
    eps = jnp.zeros((batch_size, LATENT))
    jax.block_until_ready(jax.jit(jax.grad(handwritten_loss))(params, xs, eps))
    jitted = {name: jax.jit(fn) for name, fn in implementations.items()}
    compile_s = {name: _timed_call(fn, noise_key, params, xs) for name, fn in jitted.items()}
    # One more call each to estimate the cost of a round, so that `budget_s` bounds the run.
    round_s = sum(_timed_call(fn, noise_key, params, xs) for fn in jitted.values())
    reps = max(3, min(reps, int(budget_s / max(round_s, 1e-9))))
    times = collections.defaultdict(list)
    names = list(jitted)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed_call(jitted[name], noise_key, params, xs))
    median_ms = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
    return Row(batch_size, reps, median_ms, compile_s)


# --- compiled-program statistics, for finding where a gap comes from -----------------------------


def _op_counts(hlo_text: str) -> tuple[collections.Counter, int]:
    """Ops of the entry computation by opcode (on a GPU, each fusion there is a kernel launch),
    and the number of instructions in the whole module."""
    instruction = re.compile(r"^\s+(?:ROOT\s+)?\S+\s=\s.*?\s([a-z][\w-]*)\(")
    entry, total, in_entry = collections.Counter(), 0, False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
        elif line.startswith("}"):
            in_entry = False
        elif match := instruction.match(line):
            total += 1
            if in_entry:
                entry[match.group(1)] += 1
    return entry, total


def hlo_report(batch_size: int, implementations: dict[str, Callable], seed: int = 0) -> str:
    """The entry computation's op counts (those that differ), instruction totals and flops."""
    data_key, param_key, noise_key = jax.random.split(jax.random.key(seed), 3)
    args = (noise_key, init_params(param_key), random_images(data_key, batch_size))
    counts, totals, flops = {}, {}, {}
    for name, fn in implementations.items():
        compiled = jax.jit(fn).lower(*args).compile()
        counts[name], totals[name] = _op_counts(compiled.as_text())
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops[name] = (cost or {}).get("flops", float("nan"))
    names = list(implementations)
    lines = [
        f"Compiled programs at batch {batch_size}: entry-computation ops whose counts differ",
        "(on a GPU each entry fusion or custom call is a kernel launch)",
        "",
        "| op | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for op in sorted(set().union(*counts.values())):
        row = [counts[n][op] for n in names]
        if len(set(row)) > 1:
            lines.append(f"| {op} | " + " | ".join(map(str, row)) + " |")
    lines.append("| entry ops | " + " | ".join(str(sum(counts[n].values())) for n in names) + " |")
    lines.append("| all instructions | " + " | ".join(str(totals[n]) for n in names) + " |")
    lines.append("| flops | " + " | ".join(f"{flops[n]:.4g}" for n in names) + " |")
    return "\n".join(lines)


# --- report --------------------------------------------------------------------------------------

PROGRAMS = ("per_datapoint", "batched")


def markdown_table(rows: Sequence[Row]) -> str:
    """The main table: each progvi estimator against the hand-written one."""
    lines = [
        "| batch | hand-written ms | per-datapoint ms | ratio | batched ms | ratio "
        "| first call s (hand / per-datapoint / batched) | reps |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, c = r.median_ms, r.compile_s
        lines.append(
            f"| {r.batch_size} | {m['handwritten']:.3f} | {m['per_datapoint']:.3f} "
            f"| {r.ratio('per_datapoint'):.3f} | {m['batched']:.3f} | {r.ratio('batched'):.3f} "
            f"| {c['handwritten']:.2f} / {c['per_datapoint']:.2f} / {c['batched']:.2f} "
            f"| {r.reps} |"
        )
    return "\n".join(lines)


def diagnostics_table(rows: Sequence[Row]) -> str:
    """Each program against hand-written JAX that derives its noise keys the same way."""
    lines = [
        "| batch | split-keys hand-written ms | per-datapoint / it | folded-key hand-written ms "
        "| batched / it |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.median_ms
        split, folded = m["handwritten_split_keys"], m["handwritten_folded_key"]
        lines.append(
            f"| {r.batch_size} | {split:.3f} | {m['per_datapoint'] / split:.3f} "
            f"| {folded:.3f} | {m['batched'] / folded:.3f} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, str]:
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind} (x{jax.device_count()})",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "jax": jax.__version__,
        "progvi": pv.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def report(
    rows: Sequence[Row], checks: Sequence[Check], command: str, extra: Sequence[str] = ()
) -> str:
    misses = [
        f"{name} at batch {r.batch_size} ({r.ratio(name):.3f})"
        for r in rows for name in PROGRAMS if r.ratio(name) > TARGET_RATIO
    ]
    verdict = (
        f"All ratios are within the target of {TARGET_RATIO}."
        if not misses
        else f"Above the target of {TARGET_RATIO}: " + "; ".join(misses) + "."
    )
    check_lines = [
        f"- {c.name}: max relative error {c.max_relative_error:.2e} "
        f"({'pass' if c.passed else 'FAIL'})"
        for c in checks
    ]
    return "\n".join([
        "# Reparameterized VAE ELBO gradient: progvi vs hand-written JAX",
        "",
        *[f"- {k}: {v}" for k, v in environment().items()],
        f"- command: `{command}`",
        "",
        "Median time per gradient call (jitted, synchronized); ratio = progvi / hand-written.",
        "",
        markdown_table(rows),
        "",
        verdict,
        "",
        "Gradients given identical noise, against the hand-written estimator:",
        "",
        *check_lines,
        *[line for section in extra for line in ("", section)],
        "",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--reps", type=int, default=200, help="timed rounds per batch size")
    parser.add_argument(
        "--budget", type=float, default=60.0,
        help="seconds of timed rounds per batch size at most (fewer reps, never under 3)",
    )
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="markdown output (default: results/adev_vae_grad_<backend>.md)")
    parser.add_argument("--check-batch", type=int, default=32,
                        help="batch size of the gradient check")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also time hand-written JAX that derives its keys as the programs do")
    parser.add_argument("--hlo", action="store_true",
                        help="also report op counts and flops of the compiled programs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> tuple[list[Row], list[Check], str]:
    """Runs the benchmark; returns the rows, the gradient checks and the markdown report."""
    args = parse_args(argv)
    data_key, param_key, noise_key = jax.random.split(jax.random.key(1), 3)
    checks = check_gradients(
        noise_key, init_params(param_key), random_images(data_key, args.check_batch)
    )
    for c in checks:
        print(f"gradient check {c.name}: max relative error {c.max_relative_error:.2e}",
              flush=True)
    implementations = IMPLEMENTATIONS | (DIAGNOSTICS if args.diagnostics else {})
    rows, hlo = [], []
    for batch_size in args.batch_sizes:
        rows.append(time_batch_size(batch_size, args.reps, args.budget, implementations))
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
        if args.hlo:
            hlo.append(hlo_report(batch_size, implementations))
            print(hlo[-1], flush=True)
    extra = []
    if args.diagnostics:
        extra.append("Diagnostics: each program against hand-written JAX with the same key "
                     "derivation (fold_in per site, split per datapoint).\n\n"
                     + diagnostics_table(rows))
    extra += hlo
    command = " ".join(["python benchmarks/adev_vae_grad.py",
                        *(sys.argv[1:] if argv is None else argv)])
    text = report(rows, checks, command, extra)
    print("\n" + text)
    out = args.out or RESULTS / f"adev_vae_grad_{jax.default_backend()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if not all(c.passed for c in checks):
        raise SystemExit("gradient check failed: " + ", ".join(
            c.name for c in checks if not c.passed))
    return rows, checks, text


if __name__ == "__main__":
    main()
