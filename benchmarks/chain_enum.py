"""Cost of exact enumeration of a hidden Markov model against its length.

The model: K = 3 hidden states (transition logits with a start row), Gaussian emissions, T
observations. Each form computes log p(x_{1:T}) with the states summed out exactly, and its
gradient in all parameters, as one jitted ``jax.value_and_grad``:

| name | what it is |
|---|---|
| `enum_chain` | `pv.enum_chain(step, start, xs)`: the forward algorithm, linear in T |
| `scan` | `pv.scan(step).assess({"x": xs}, ...)` with the enumerated state left out: the same |
| `by_hand` | the forward algorithm written directly with `jax.lax.scan` |
| `exponential` | today's form: a Python loop of `pv.enum_parallel` sites, value p(x|z); K^T paths |

For each length the table gives the compile time (trace, lower, XLA compile) and the median run
time of the compiled function over `--reps` calls. A form whose compile and first run take more
than `--budget` seconds is not run at greater lengths (the exponential form multiplies its cost
by K per step). The linear forms run at every length of both lists. Check: at every length each
form's value and gradient agree with `by_hand` (max error relative to their scale < 1e-3, which
float32 meets at 10,000 steps; the values are summed over all steps).

Usage: python benchmarks/chain_enum.py [--lengths 10,100,1000,10000]
       [--exponential-lengths 2,4,6,8,10,12,14] [--reps 5] [--budget 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import statistics
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

import progvi as pv

K = 3
START = K


def make_params(seed=0):
    a, b, c = jax.random.split(jax.random.key(seed), 3)
    return {
        "logits": jax.random.normal(a, (K + 1, K)),
        "locs": 2.0 * jax.random.normal(b, (K,)),
        "log_scales": 0.3 * jax.random.normal(c, (K,)),
    }


def make_data(length, seed=1):
    return 1.5 * jax.random.normal(jax.random.key(seed), (length,))


def _emission(params, z):
    return dist.Normal(params["locs"][z], jnp.exp(params["log_scales"][z]))


def enum_chain(params, xs):
    def step(z, x):
        z = pv.sample("z", dist.Categorical(logits=params["logits"][z]))
        return z, _emission(params, z).log_prob(x)

    return pv.enum_chain(step, START, xs)


@pv.gen
def _scan_step(z, inputs):
    logits, locs, log_scales = inputs
    z = pv.sample("z", dist.Categorical(logits=logits[z]), pv.enum_parallel)
    pv.sample("x", dist.Normal(locs[z], jnp.exp(log_scales[z])))
    return z, None


def scan(params, xs):
    n = xs.shape[0]
    inputs = tuple(jnp.broadcast_to(params[k], (n, *params[k].shape))
                   for k in ("logits", "locs", "log_scales"))
    return pv.scan(_scan_step).assess({"x": xs}, START, inputs)[0]


def by_hand(params, xs):
    log_trans = jax.nn.log_softmax(params["logits"], -1)

    def emit(x):
        return dist.Normal(params["locs"], jnp.exp(params["log_scales"])).log_prob(x)

    def body(alpha, x):
        return logsumexp(alpha[:, None] + log_trans[:K], 0) + emit(x), None

    alpha, _ = jax.lax.scan(body, log_trans[START] + emit(xs[0]), xs[1:])
    return logsumexp(alpha)


def exponential(params, xs):
    @pv.expectation
    def likelihood(params):
        z, log_w = START, 0.0
        for t in range(xs.shape[0]):
            z = pv.sample(f"z{t}", dist.Categorical(logits=params["logits"][z]), pv.enum_parallel)
            log_w = log_w + _emission(params, z).log_prob(xs[t])
        return jnp.exp(log_w)

    return jnp.log(likelihood.estimate(jax.random.key(0), params))


FORMS = {"enum_chain": enum_chain, "scan": scan, "by_hand": by_hand, "exponential": exponential}


class Timing(NamedTuple):
    compile_s: float  # trace, lower and compile
    run_ms: float  # median run time of the compiled function
    error: float  # max |value and gradient - by_hand's|, relative to their scale


def measure(fn, params, xs, reps):
    """Compiles ``value_and_grad(fn)`` afresh, then times its runs; returns (Timing, output)."""
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(fn)).lower(params, xs).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(params, xs))
    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, xs))
        runs.append(time.perf_counter() - start)
    return compile_s, 1e3 * statistics.median(runs), out


def _error(out, reference):
    a, b = jax.tree.leaves(out), jax.tree.leaves(reference)
    scale = max(1.0, max(float(jnp.max(jnp.abs(y))) for y in b))
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(a, b, strict=True)) / scale


def run(lengths, exponential_lengths, reps, budget):
    """{length: {form: Timing}}; forms past their budget are left out at greater lengths."""
    params = make_params()
    rows: dict[int, dict[str, Timing]] = {}
    stopped: set[str] = set()
    for length in sorted(set(lengths) | set(exponential_lengths)):
        xs = make_data(length)
        row = {}
        reference = None
        names = ["by_hand"] + [n for n in FORMS if n != "by_hand"]
        for name in names:
            if name in stopped:
                continue
            if name == "exponential" and length not in exponential_lengths:
                continue
            start = time.perf_counter()
            compile_s, run_ms, out = measure(FORMS[name], params, xs, reps)
            if name == "by_hand":
                reference = out
            row[name] = Timing(compile_s, run_ms, _error(out, reference))
            if time.perf_counter() - start > budget:
                stopped.add(name)
        rows[length] = row
    return rows


def render(rows, reps, budget):
    names = list(FORMS)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Exact enumeration of an HMM: cost against length",
        "",
        f"Measured under load (a shared machine; compare columns of one run, not absolute "
        f"numbers): {now}, jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{platform.machine()}, K = {K} states, median of {reps} runs, budget {budget} s.",
        "Each cell: compile s / run ms of one jitted value and gradient of log p(x). "
        "`-`: not run (past the budget at a shorter length, or not asked for).",
        "",
        "| T | " + " | ".join(names) + " | max rel. error vs by_hand |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for length, row in rows.items():
        cells = [f"{row[n].compile_s:.2f} / {row[n].run_ms:.3g}" if n in row else "-"
                 for n in names]
        error = max((t.error for t in row.values()), default=0.0)
        lines.append(f"| {length} | " + " | ".join(cells) + f" | {error:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,100,1000,10000")
    parser.add_argument("--exponential-lengths", default="2,4,6,8,10,12,14")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",") if n]
    exponential_lengths = [int(n) for n in args.exponential_lengths.split(",") if n]
    rows = run(lengths, exponential_lengths, args.reps, args.budget)
    text = render(rows, args.reps, args.budget)
    out = pathlib.Path(args.out) if args.out else (
        pathlib.Path(__file__).parent / "results" / f"chain_enum_{jax.default_backend()}.md")
    out.write_text(text)
    print(text)
    bad = [(t, n, r.error) for t, row in rows.items() for n, r in row.items() if r.error > 1e-3]
    if bad:
        print(f"CHECK FAILED: forms disagree with by_hand: {bad}", file=sys.stderr)
    return rows, not bad, text


if __name__ == "__main__":
    main()
