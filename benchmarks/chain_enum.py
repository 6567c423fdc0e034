"""Cost of exact enumeration of a hidden Markov model against its length.

The model: K = 3 hidden states (transition logits with a start row), Gaussian emissions, T
observations. Each form computes log p(x_{1:T}) with the states summed out exactly, and its
gradient in all parameters, as one jitted ``jax.value_and_grad``:

| name | what it is |
|---|---|
| `enum_chain` | `pv.enum_chain(step, start, xs)`: the forward algorithm, linear in T |
| `scan` | `pv.scan(step).assess({"x": xs}, ...)` with the enumerated state left out: the same |
| `by_hand` | the forward algorithm written directly with `jax.lax.scan` |
| `exponential` | a Python loop of `pv.enum_parallel` sites, value p(x|z); K^T paths |
| `numpyro_scan` | a NumPyro model with `control_flow.scan`, `pv.interop.numpyro(...).assess` |
| `numpyro_markov` | a NumPyro model with a `markov` loop, the same (one site at a time) |

For each length the table gives the compile time (trace, lower, XLA compile) and the median run
time of the compiled function over `--reps` calls. A form whose compile and first run take more
than `--budget` seconds is not run at greater lengths (the exponential form multiplies its cost
by K per step). The exponential form runs at `--exponential-lengths` only, the `markov` loop at
`--markov-lengths` only (it takes an array dimension per step: at most 64). The other forms run
at every length of all lists. Check: at every length each form's value and gradient agree with
`by_hand` (max error relative to their scale < 1e-3, which float32 meets at 10,000 steps; the
values are summed over all steps).

Usage: python benchmarks/chain_enum.py [--lengths 10,100,1000,10000]
       [--exponential-lengths 2,4,6,8,10,12,14] [--markov-lengths 2,4,6,8,10,12,14,60]
       [--reps 5] [--budget 30] [--note TEXT] [--out FILE]
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
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from numpyro.contrib.control_flow import scan as numpyro_scan_loop
from numpyro.contrib.funsor import markov

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


def _numpyro_state(params, name, z):
    return numpyro.sample(name, dist.Categorical(logits=params["logits"][z]),
                          infer={"enumerate": "parallel"})


def numpyro_scan(params, xs):
    def transition(z, x):
        z = _numpyro_state(params, "z", z)
        numpyro.sample("x", _emission(params, z), obs=x)
        return z, None

    def hmm(xs):
        numpyro_scan_loop(transition, START, xs)

    return pv.interop.numpyro(hmm).assess({}, xs)[0]


def numpyro_markov(params, xs):
    def hmm(xs):
        z = START
        for t in markov(range(xs.shape[0])):
            z = _numpyro_state(params, f"z{t}", z)
            numpyro.sample(f"x{t}", _emission(params, z), obs=xs[t])

    return pv.interop.numpyro(hmm).assess({}, xs)[0]


FORMS = {"enum_chain": enum_chain, "scan": scan, "by_hand": by_hand, "exponential": exponential,
         "numpyro_scan": numpyro_scan, "numpyro_markov": numpyro_markov}


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


def run(lengths, limited, reps, budget):
    """{length: {form: Timing}}; forms past their budget are left out at greater lengths.

    `limited` maps the forms that run at some lengths only to those lengths.
    """
    params = make_params()
    rows: dict[int, dict[str, Timing]] = {}
    stopped: set[str] = set()
    for length in sorted(set(lengths).union(*limited.values())):
        xs = make_data(length)
        row = {}
        reference = None
        names = ["by_hand"] + [n for n in FORMS if n != "by_hand"]
        for name in names:
            if name in stopped:
                continue
            if name in limited and length not in limited[name]:
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


def render(rows, reps, budget, note):
    names = list(FORMS)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Exact enumeration of an HMM: cost against length",
        "",
        f"{note} {now}, jax {jax.__version__}, backend {jax.default_backend()}, "
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
    parser.add_argument("--markov-lengths", default="2,4,6,8,10,12,14,60")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--note", default="Measured on a quiet machine:")
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",") if n]
    limited = {"exponential": [int(n) for n in args.exponential_lengths.split(",") if n],
               "numpyro_markov": [int(n) for n in args.markov_lengths.split(",") if n]}
    rows = run(lengths, limited, args.reps, args.budget)
    text = render(rows, args.reps, args.budget, args.note)
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
