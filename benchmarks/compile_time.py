"""Compile time of large expectation programs: progvi against the same gradient hand-written in JAX.

Two families of programs, each compiled from scratch (a fresh function, so no cache is hit) and
timed to its first gradient: trace (Python: the program, progvi's interpreter, `jax.grad`),
XLA (lower and compile), and the total time to the first gradient, which includes one run.

* Sites in a Python loop: ``n`` reparameterized Normal sites, each one's mean depending on the
  previous value through a little arithmetic (``x = tanh(z) + 0.1 x``, ``total += x^2 - z``).
  progvi: a ``@pv.expectation`` differentiated with ``jax.grad(lambda p: obj.estimate(key, p))``;
  JAX: the same estimator hand-written, ``keys = jax.random.split(key, n)``, one
  ``jax.random.normal`` per site, ``jax.grad``. Both are checked to compute the same gradient:
  the hand-written one fed progvi's draws (its keys derived as progvi derives them) agrees
  exactly. The table also counts the ops of the program XLA receives (StableHLO) and of the one
  it compiles (optimized HLO instructions).
* Sequential enumeration: ``depth`` Bernoulli sites in a row, each one's logit depending on the
  previous value, enumerated by ``pv.enum_parallel`` (vmapped), ``pv.enum`` (sequential, which
  switches to the parallel form past ``pv.Enum.sequential_copies`` traced copies) and ``pv.enum``
  without that switch (the sequential form throughout: it traces the end of the program
  ``2^depth`` times). The three values must agree (all are exact). A variant whose time exceeds
  ``--budget`` is not measured at greater depths (each level doubles it).

Implementations are measured in turn, the order rotating every round so that machine load falls
on all of them alike, after a discarded warm-up round at a tiny size, and the table gives
medians over ``--reps`` rounds.

``--baseline DIR`` also measures the progvi package in ``DIR/progvi`` (e.g. an earlier commit:
``git archive <commit> progvi | tar -x -C DIR``) as ``baseline``, in the same rounds.

Usage: python benchmarks/compile_time.py [--sites 10,50,100,200] [--depths 2,4,...,12] [--reps 3]
       [--baseline DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import pathlib
import platform
import re
import statistics
import sys
import time
import warnings
import zlib
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import progvi as pv

# -- sites in a Python loop -----------------------------------------------------------------------


def _params(n):
    return jnp.stack([jnp.linspace(-0.5, 0.5, n), jnp.linspace(-1.0, 0.0, n)], axis=1)


def progvi_gradient(n, module=pv):
    """The gradient function of the progvi program of `n` sites (`module`: the progvi to use)."""

    @module.expectation
    def chain(params):
        x, total = 0.0, 0.0
        for i in range(n):
            z = module.sample(f"z_{i}", dist.Normal(params[i, 0] + 0.5 * x, jnp.exp(params[i, 1])))
            x = jnp.tanh(z) + 0.1 * x
            total = total + x**2 - z
        return total

    return lambda key, params: jax.grad(lambda p: chain.estimate(key, p))(params)


def _hand_written(n, site_keys):
    def chain(params, key):
        keys = site_keys(key)
        x, total = 0.0, 0.0
        for i in range(n):
            eps = jax.random.normal(keys[i])
            z = params[i, 0] + 0.5 * x + jnp.exp(params[i, 1]) * eps
            x = jnp.tanh(z) + 0.1 * x
            total = total + x**2 - z
        return total

    return lambda key, params: jax.grad(chain)(params, key)


def jax_gradient(n):
    """The same gradient hand-written in JAX: split keys, one `jax.random.normal` per site."""
    return _hand_written(n, lambda key: jax.random.split(key, n))


def jax_gradient_progvi_keys(n):
    """The hand-written gradient with each site's key derived as progvi derives it.

    progvi keys a site by its address: ``fold_in(key, crc32(address))``. This mirrors that
    internal rule only to check that both programs compute the same gradient.
    """
    salts = np.asarray([zlib.crc32(f"z_{i}".encode()) & 0x7FFFFFFF for i in range(n)], np.uint32)
    return _hand_written(n, lambda key: jax.vmap(jax.random.fold_in, (None, 0))(key, salts))


SITE_IMPLEMENTATIONS = {"progvi": progvi_gradient, "JAX": jax_gradient}

# -- sequential enumeration -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SequentialEnum(pv.Enum):
    """``pv.enum`` without the switch to the parallel form: sequential at any depth."""

    sequential_support: ClassVar[int] = sys.maxsize
    sequential_copies: ClassVar[int] = sys.maxsize


def _thetas(depth):
    return jnp.linspace(0.3, 1.2, depth)


def enum_program(depth, strategy, module=pv):
    """`depth` Bernoulli sites in a row, each logit shifted by the previous value."""

    @module.expectation
    def chain(theta):
        shift, total = 0.0, 0.0
        for i in range(depth):
            b = module.sample(f"b_{i}", dist.Bernoulli(logits=theta[i] + shift),
                              strategy=strategy)
            shift = 0.5 * b - 0.25
            total = total + b * theta[i] ** 2 + 0.1 * b
        return total

    return chain


def enum_gradient(depth, strategy, module=pv):
    chain = enum_program(depth, strategy, module)
    return lambda key, theta: jax.value_and_grad(lambda t: chain.estimate(key, t))(theta)


ENUM_IMPLEMENTATIONS = {
    "parallel": lambda depth: enum_gradient(depth, pv.enum_parallel),
    "switch": lambda depth: enum_gradient(depth, pv.enum),
    "no switch": lambda depth: enum_gradient(depth, SequentialEnum()),
}

# -- measuring ------------------------------------------------------------------------------------


class Timing(NamedTuple):
    trace_s: float  # Python: tracing the program (and progvi's interpreter) and the gradient
    xla_s: float  # lowering and XLA compilation
    total_s: float  # to the first gradient: trace, lower, compile and one run
    stablehlo_ops: int  # ops of the program handed to XLA
    hlo_ops: int  # instructions of the optimized program XLA compiled
    value: object  # the first gradient (or value and gradient)


def _count_ops(text, pattern):
    return sum(1 for line in text.splitlines() if re.search(pattern, line))


def first_gradient(gradient, *args) -> Timing:
    """Traces, lowers, compiles and runs a fresh `gradient` once, timing each part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the switch's warning, once per traced copy of a site
        start = time.perf_counter()
        traced = jax.jit(gradient).trace(*args)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        compiled = lowered.compile()
        compiled_at = time.perf_counter()
        value = jax.block_until_ready(compiled(*args))
        done = time.perf_counter()
    return Timing(
        traced_at - start, compiled_at - traced_at, done - start,
        _count_ops(lowered.as_text(), r"(= |^\s*)(stablehlo|chlo|func)\.\w+"),
        _count_ops(compiled.as_text(), r"^\s*(ROOT )?%?[\w.\-]+ = "),
        value,
    )


def _rounds(names, reps):
    """The order of the implementations in each round, rotating."""
    for r in range(reps):
        yield names[r % len(names):] + names[:r % len(names)]


def _median(timings):
    seconds = [statistics.median(getattr(t, f) for t in timings) for f in Timing._fields[:3]]
    # Op counts do not vary between rounds.
    return Timing(*seconds, timings[-1].stablehlo_ops, timings[-1].hlo_ops, timings[-1].value)


def measure_sites(sizes, reps, implementations=None, key=None):
    """Per size, the median `Timing` of each implementation's first gradient."""
    implementations = implementations or SITE_IMPLEMENTATIONS
    key = jax.random.key(0) if key is None else key
    for make in implementations.values():  # warm-up (first-use costs of JAX and numpyro)
        first_gradient(make(2), key, _params(2))
    rows = []
    for n in sizes:
        timings = {name: [] for name in implementations}
        for order in _rounds(list(implementations), reps):
            for name in order:
                timings[name].append(first_gradient(implementations[name](n), key, _params(n)))
        rows.append((n, {name: _median(t) for name, t in timings.items()}))
        print(_site_line(rows[-1], list(implementations)), flush=True)
    return rows


def measure_enum(depths, reps, budget, implementations=None, key=None):
    """Per depth, the median `Timing` of each enumeration (None once one ran past `budget`)."""
    implementations = implementations or ENUM_IMPLEMENTATIONS
    key = jax.random.key(0) if key is None else key
    for make in implementations.values():  # warm-up
        first_gradient(make(2), key, _thetas(2))
    over = set()
    rows = []
    for depth in depths:
        timings = {name: [] for name in implementations}
        for order in _rounds(list(implementations), reps):
            for name in order:
                if name not in over:
                    timings[name].append(
                        first_gradient(implementations[name](depth), key, _thetas(depth)))
        medians = {name: _median(t) if t else None for name, t in timings.items()}
        over |= {name for name, t in medians.items() if t is not None and t.total_s > budget / 2}
        rows.append((depth, medians))
        print(_enum_line(rows[-1], list(implementations)), flush=True)
    return rows


def check_same_gradient(n=5, key=None):
    """progvi's gradient equals the hand-written one fed the same draws; returns the error."""
    key = jax.random.key(3) if key is None else key
    params = _params(n)
    ours = jax.jit(progvi_gradient(n))(key, params)
    theirs = jax.jit(jax_gradient_progvi_keys(n))(key, params)
    error = float(jnp.max(jnp.abs(ours - theirs)) / jnp.max(jnp.abs(theirs)))
    assert error < 1e-5, f"progvi's gradient differs from the hand-written one: {error}"
    return error


def _agree(medians):
    values = [t.value for t in medians.values() if t is not None]
    reference = jax.tree.leaves(values[0])
    return all(
        np.allclose(a, b, rtol=1e-4, atol=1e-6)
        for other in values[1:] for a, b in zip(reference, jax.tree.leaves(other), strict=True)
    )


def load_baseline(directory):
    """The progvi package in ``directory/progvi``, imported as ``progvi_baseline``."""
    init = pathlib.Path(directory) / "progvi" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "progvi_baseline", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["progvi_baseline"] = module
    spec.loader.exec_module(module)
    return module


def implementations(baseline=None):
    """The site and enumeration implementations to measure, with the baseline's if given."""
    sites, enums = dict(SITE_IMPLEMENTATIONS), dict(ENUM_IMPLEMENTATIONS)
    if baseline is not None:
        sites = {"progvi": sites["progvi"],
                 "baseline": lambda n: progvi_gradient(n, baseline), "JAX": sites["JAX"]}
        enums["baseline"] = lambda depth: enum_gradient(depth, baseline.enum, baseline)
    return sites, enums


SITE_HEADER = ("| sites | first gradient s ({names}) | {ratio} | trace s ({names}) "
               "| StableHLO ops ({names}) | HLO instructions ({names}) |")
ENUM_HEADER = ("| depth | first gradient s ({names}) | switch / parallel | trace s ({names}) "
               "| HLO instructions ({names}) | values agree |")


def _cells(medians, names, field, fmt):
    return ", ".join("—" if medians[n] is None else fmt.format(getattr(medians[n], field))
                     for n in names)


def _ratio_names(names):
    return ", ".join(f"{n} / JAX" for n in names if n != "JAX")


def _site_line(row, names):
    n, medians = row
    ratio = ", ".join(f"{medians[name].total_s / medians['JAX'].total_s:.3f}"
                      for name in names if name != "JAX")
    return (f"| {n} | {_cells(medians, names, 'total_s', '{:.2f}')} | {ratio} "
            f"| {_cells(medians, names, 'trace_s', '{:.2f}')} "
            f"| {_cells(medians, names, 'stablehlo_ops', '{}')} "
            f"| {_cells(medians, names, 'hlo_ops', '{}')} |")


def _enum_line(row, names):
    depth, medians = row
    ratio = "—"
    if medians.get("switch") and medians.get("parallel"):
        ratio = f"{medians['switch'].total_s / medians['parallel'].total_s:.2f}"
    return (f"| {depth} | {_cells(medians, names, 'total_s', '{:.2f}')} | {ratio} "
            f"| {_cells(medians, names, 'trace_s', '{:.2f}')} "
            f"| {_cells(medians, names, 'hlo_ops', '{}')} | {'yes' if _agree(medians) else 'NO'} |")


def _ints(text):
    return [int(x) for x in text.split(",") if x]


def main(argv=None):
    """Runs the benchmark; returns (site rows, enumeration rows, the markdown written)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="10,50,100,200", help="numbers of sites")
    parser.add_argument("--depths", default="2,4,6,7,8,10,12", help="enumeration depths")
    parser.add_argument("--reps", type=int, default=3, help="rounds per size (medians)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds: an enumeration slower than half this is not run deeper")
    parser.add_argument("--baseline", default=None,
                        help="a directory holding another progvi package to measure alongside")
    parser.add_argument("--note", default="", help="a line about the machine, for the results")
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/compile_time_<backend>.md")
    args = parser.parse_args(argv)

    error = check_same_gradient()
    baseline = None if args.baseline is None else load_baseline(args.baseline)
    sites, enums = implementations(baseline)
    site_names, enum_names = list(sites), list(enums)
    site_header = SITE_HEADER.format(names=", ".join(site_names), ratio=_ratio_names(site_names))
    enum_header = ENUM_HEADER.format(names=", ".join(enum_names))
    print(site_header)
    site_rows = measure_sites(_ints(args.sites), args.reps, sites)
    print(enum_header)
    enum_rows = measure_enum(_ints(args.depths), args.reps, args.budget, enums)

    device = jax.devices()[0]
    lines = [
        f"# Compile time of large programs ({jax.default_backend()})",
        "",
        f"Generated by `benchmarks/compile_time.py` on {datetime.date.today().isoformat()}: "
        f"{device.device_kind} ({platform.machine()}), jax {jax.__version__}, "
        f"numpyro {numpyro.__version__}.",
        *([args.note] if args.note else []),
        "",
        "Time to the first gradient of a fresh function (trace, lower, XLA compile, one run), "
        f"median of {args.reps} interleaved rounds; trace s is the Python part of it. The "
        "target is progvi / JAX <= 1.1.",
        "",
        *([f"`baseline`: the progvi package in `{args.baseline}` (progvi {baseline.__version__})."]
          if baseline is not None else []),
        "",
        "## progvi against JAX: reparameterized Normal sites in a Python loop",
        "",
        "progvi's gradient agrees with the hand-written one fed the same draws (relative "
        f"error {error:.1e}).",
        "",
        site_header,
        "|---|---|---|---|---|---|",
        *[_site_line(row, site_names) for row in site_rows],
        "",
        "## Sequential enumeration: Bernoulli sites in a row",
        "",
        f"`switch`: `pv.enum`, which enumerates in parallel past {pv.Enum.sequential_copies} "
        "traced copies of the rest of the program; `no switch`: the sequential form throughout "
        f"(—: not run, the previous depth took over {args.budget / 2:.0f} s)"
        + ("; `baseline`: its `pv.enum`." if baseline is not None else "."),
        "",
        enum_header,
        "|---|---|---|---|---|---|",
        *[_enum_line(row, enum_names) for row in enum_rows],
        "",
    ]
    text = "\n".join(lines)
    out = pathlib.Path(args.out or pathlib.Path(__file__).parent / "results"
                       / f"compile_time_{jax.default_backend()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return site_rows, enum_rows, text


if __name__ == "__main__":
    main()
