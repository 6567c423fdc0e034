"""One training step of an energy model with the compositional estimator (MECO): progvi against JAX.

The model is a 2-D energy model, ``log f(x) = -E(x)`` with an MLP energy 2-128-128-1 (softplus
hidden layers), fitted by maximum likelihood on two moons (generated here; no downloads) against
a fixed noise ``q = N(0, 4 I)``. The negative log-likelihood of a batch of B points is

    -mean_i log f(x_i) + log E_q[f(y) / q(y)],

its log-partition term estimated by the compositional estimator (Jiang et al., ICML 2023) from B
noise points per step: ``ŵ = mean_k f(y_k) / q(y_k)``, a running estimate
``u ← (1 - ρ) u + ρ ŵ`` (ρ = γ / (1 - (1 - γ)^t), γ = 0.1), the value ``log u`` and the gradient
``∇ŵ / u``; the step is adam. Written four ways, sharing the network, the data and the optimizer:

* ``handwritten``: plain JAX: ``y = 2 * jax.random.normal(key, (B, 2))``, the running estimate
  in log space, a surrogate whose gradient is ``Σ_k (w_k / (B u)) ∇ log w_k``, ``jax.grad`` and
  the optax update;
* ``per_run``: progvi as its documentation writes it: an inner program drawing one noise point
  and returning ``log f(y) - log q(y)``, under
  ``pv.log_expectation(..., estimator=pv.compositional(0.1, num_samples=B))``,
  trained by ``pv.make_step(nll, optax.adam(1e-3), direction="minimize")``;
* ``one_site``: the same with an inner program that draws all B points as one site and returns
  ``logsumexp(log f - log q) - log B``, with ``num_samples=1``;
* ``nll``: the library's objective, ``pv.unnormalized.nll(log_f, x, noise,
  estimator=pv.compositional(0.1, num_samples=B))``, the per-run form inside.

How it measures (as ``vae_step.py`` does): each step is traced, lowered and compiled fresh
``--compile-reps`` times (the median is the compile time); then the compiled steps are called in
turn, each call synchronized with ``jax.block_until_ready``, the order rotating every round so
that load on the machine falls on all of them alike; the table gives medians per call and ratios
to the hand-written step. Targets (DESIGN.md §5): step ratio <= 1.05, compile ratio <= 1.5.

The check, before timing: from the same params, data and estimator state, each progvi step and
the hand-written step fed the very noise points the program drew give the same gradients (adam's
moments), the same running estimate and value and the same new params, over a few steps (so that
ρ < 1 and u carries over; see `check_steps` for the first step, where adam amplifies rounding).
The draws are read back from progvi itself: a probe program with the same construct address,
site and distribution, a log-weight ``c · y`` linear in an input ``c``, and a probe estimator whose
state is the Jacobian of each run's log-weight in ``c``, which is the draws ``y``. The same check
with the noise of another key is reported too: it fails by an error of order 1, so the check
discriminates.

Usage:
  python benchmarks/unnormalized_step.py                  # batch 256 ... 16384, writes results/
  python benchmarks/unnormalized_step.py --quick --out /tmp/u.md   # a few seconds, noisy
  python benchmarks/unnormalized_step.py --batch-sizes 1024 --hlo --diagnostics
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
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
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv

HIDDEN = 128
NOISE_SCALE = 2.0  # q = N(0, NOISE_SCALE^2 I)
GAMMA = 0.1
LEARNING_RATE = 1e-3
BATCH_SIZES = (256, 1024, 4096, 16384)
TARGET_RATIO = 1.05
TARGET_COMPILE_RATIO = 1.5
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
NOISE = dist.Normal(jnp.zeros(2), NOISE_SCALE).to_event(1)


# --- the model, shared by all implementations ----------------------------------------------------


def init_params(key) -> dict:
    """The energy MLP 2-128-128-1, weights scaled by 1/sqrt(fan-in)."""

    def dense(key, fan_in, fan_out):
        w = jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in)
        return {"w": w, "b": jnp.zeros(fan_out)}

    keys = jax.random.split(key, 3)
    return {
        "hidden1": dense(keys[0], 2, HIDDEN),
        "hidden2": dense(keys[1], HIDDEN, HIDDEN),
        "out": dense(keys[2], HIDDEN, 1),
    }


def _dense(layer, x):
    return x @ layer["w"] + layer["b"]


def log_f(params, x):
    """The unnormalized log density ``-E(x)`` of points x of shape (..., 2), shape (...)."""
    h = jax.nn.softplus(_dense(params["hidden1"], x))
    h = jax.nn.softplus(_dense(params["hidden2"], h))
    return -_dense(params["out"], h)[..., 0]


def two_moons(key, n: int) -> jax.Array:
    """n points of the two-moons data set (noise 0.1), centred: shape (n, 2)."""
    angle_key, moon_key, jitter_key = jax.random.split(key, 3)
    t = jnp.pi * jax.random.uniform(angle_key, (n,))
    upper = jax.random.bernoulli(moon_key, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(t), 1.0 - jnp.cos(t)) - 0.5
    y = jnp.where(upper, jnp.sin(t), 0.5 - jnp.sin(t)) - 0.25
    return jnp.stack([x, y], -1) + 0.1 * jax.random.normal(jitter_key, (n, 2))


# --- hand-written JAX ----------------------------------------------------------------------------


class HandwrittenState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    log_u: jax.Array  # log of the running estimate u of Z (any value before the first step)
    weight: jax.Array  # 1 - (1 - gamma)^t, to debias the moving average


def noise_log_density(ys):
    """log N(y; 0, NOISE_SCALE^2 I) of points of shape (n, 2)."""
    return (-0.5 * jnp.sum((ys / NOISE_SCALE) ** 2, -1)
            - 2 * math.log(NOISE_SCALE) - math.log(2 * math.pi))


def handwritten_loss(params, x, ys, log_u, weight):
    """A loss whose gradient is MECO's: ``-mean ∇log f(x) + ∇ŵ / u``; aux: its value and state."""
    weight = (1.0 - GAMMA) * weight + GAMMA
    rate = GAMMA / weight  # 1 at the first step: u starts at the first estimate
    log_b = math.log(ys.shape[0])
    log_w = log_f(params, ys) - noise_log_density(ys)
    log_w_hat = jax.nn.logsumexp(log_w) - log_b
    log_u = jax.lax.stop_gradient(
        jnp.logaddexp(jnp.log1p(-rate) + log_u, jnp.log(rate) + log_w_hat))
    # ∇ŵ / u = Σ_k w_k / (B u) ∇log w_k: the gradient of this zero-valued surrogate.
    coefficients = jax.lax.stop_gradient(jnp.exp(log_w - log_b - log_u))
    surrogate = jnp.sum(coefficients * log_w)
    value = -jnp.mean(log_f(params, x)) + log_u
    return value + (surrogate - jax.lax.stop_gradient(surrogate)), (value, log_u, weight)


def handwritten_update(optimizer, state: HandwrittenState, x, ys):
    """One adam step of the hand-written estimator on given noise points; (state, value)."""
    grads, (value, log_u, weight) = jax.grad(handwritten_loss, has_aux=True)(
        state.params, x, ys, state.log_u, state.weight)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return HandwrittenState(optax.apply_updates(state.params, updates), opt_state, log_u,
                            weight), value


def handwritten_factory(batch_size: int, draw_noise=None):
    optimizer = optax.adam(LEARNING_RATE)
    draw_noise = draw_noise or (lambda key: NOISE_SCALE * jax.random.normal(key, (batch_size, 2)))

    def init(key, params, x):
        zero = jnp.zeros(())
        return (HandwrittenState(params, optimizer.init(params), zero, zero), key)

    def step(carry, x):
        state, key = carry
        state, value = handwritten_update(optimizer, state, x, draw_noise(key))
        return (state, key), value

    return init, step


# --- progvi --------------------------------------------------------------------------------------


def per_run_nll(batch_size: int):
    """The NLL program: an inner program of one noise draw, run B times by the estimator."""

    @pv.expectation
    def log_weight(params):
        y = pv.sample("y", NOISE)
        return log_f(params, y) - NOISE.log_prob(y)

    @pv.expectation
    def nll(params, x):
        log_z = pv.log_expectation(
            log_weight, params, estimator=pv.compositional(GAMMA, num_samples=batch_size))
        return -jnp.mean(log_f(params, x)) + log_z

    return nll


def one_site_nll(batch_size: int):
    """The NLL program: an inner program drawing all B noise points as one site, run once."""

    @pv.expectation
    def log_weight(params):
        ys = pv.sample("y", NOISE.expand((batch_size,)))
        return jax.nn.logsumexp(log_f(params, ys) - NOISE.log_prob(ys)) - math.log(batch_size)

    @pv.expectation
    def nll(params, x):
        log_z = pv.log_expectation(log_weight, params, estimator=pv.compositional(GAMMA))
        return -jnp.mean(log_f(params, x)) + log_z

    return nll


def library_nll(batch_size: int):
    """The NLL program through `pv.unnormalized.nll`."""

    @pv.expectation
    def nll(params, x):
        # The address of the one-site program's construct: nll draws its K points as one site.
        return pv.unnormalized.nll(
            lambda ys, p: log_f(p, ys), x, dist.Normal(jnp.zeros(2), NOISE_SCALE),
            model_args=(params,), estimator=pv.compositional(GAMMA, num_samples=batch_size),
            address="log_weight")

    return nll


def progvi_factory(program: Callable[[int], pv.Expectation]):
    def factory(batch_size: int):
        train = pv.make_step(program(batch_size), optax.adam(LEARNING_RATE),
                             direction="minimize")

        def init(key, params, x):
            return (train.init(params, x), key)

        def step(carry, x):
            state, key = carry
            state, value = train.step(state, key, x)
            return (state, key), value

        return init, step

    return factory


PROGRAMS = {"per_run": per_run_nll, "one_site": one_site_nll, "nll": library_nll}
IMPLEMENTATIONS = {"handwritten": handwritten_factory} | {
    name: progvi_factory(program) for name, program in PROGRAMS.items()}


def _split_keys_noise(batch_size):
    # A hand-written step that derives one key per noise point as the per-run program does
    # (split, then fold_in per run), to separate the cost of the keys from any other.
    def draw(key):
        keys = jax.random.split(jax.random.fold_in(key, 0), batch_size)
        return jax.vmap(
            lambda k: NOISE_SCALE * jax.random.normal(jax.random.fold_in(k, 0), (2,)))(keys)

    return draw


DIAGNOSTICS = {"handwritten_split_keys": lambda b: handwritten_factory(b, _split_keys_noise(b))}


# --- the check: the same step given the same noise -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class _DrawRecorder(pv.LogExpectationEstimator):
    """A probe estimator: its state is the Jacobian of each run's log-weight in the inner
    program's last input ``c``; for a log-weight ``c · y`` that is the run's draws ``y``."""

    num_samples: int = 1
    name = "draw recorder"

    def init(self, inputs):
        return jnp.zeros((self.num_samples, *inputs[-1].shape), inputs[-1].dtype)

    def jvp(self, inner, state, tangent):
        *others, c = inner.inputs
        draws = jax.jacobian(lambda c: inner.at([*others, c]))(c)
        zero = jnp.zeros(())
        return zero, zero, draws


def noise_reader(form: str, batch_size: int) -> Callable[[jax.Array], jax.Array]:
    """``key -> the noise points (B, 2)`` that the program of `form` draws at ``key``, read back
    by a probe with the same construct address (``log_weight``), site (``y``) and distribution."""
    if form == "one_site":
        site, coefficients, runs = NOISE.expand((batch_size,)), jnp.zeros((batch_size, 2)), 1
    else:
        site, coefficients, runs = NOISE, jnp.zeros(2), batch_size

    @pv.expectation
    def log_weight(c):
        return jnp.sum(c * pv.sample("y", site))

    @pv.expectation
    def probe(c):
        return pv.log_expectation(log_weight, c, estimator=_DrawRecorder(num_samples=runs))

    def read(key):
        _, states = probe.estimate_with_state(key, None, coefficients)
        return states["log_weight"].reshape(batch_size, 2)

    return read


class Check(NamedTuple):
    name: str  # the progvi implementation compared with the hand-written step
    moments_error: float  # max over steps and leaves of adam's moments (so of the gradients):
    #                       max|m - m_hand| / max|m_hand|
    params_error: float  # the same for the params after the last step
    log_u_error: float  # max over steps of |log u - log u_hand|
    value_error: float  # max over steps of |value - value_hand|
    other_noise_error: float  # moments_error of a hand-written step on another key's noise
    passed: bool


def _relative_error(a, b, per_leaf: bool = True) -> float:
    """max|a - b| / max|b|, per leaf (the worst leaf) or over the whole tree at once."""
    # In NumPy: eager jnp ops would each compile a small program, for every leaf shape.
    pairs = [(np.asarray(x, np.float64), np.asarray(y, np.float64))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    if not per_leaf:
        pairs = [(np.concatenate([x.ravel() for x, _ in pairs]),
                  np.concatenate([y.ravel() for _, y in pairs]))]
    return max(float(np.max(np.abs(x - y), initial=0.0) / (np.max(np.abs(y), initial=0.0) + 1e-30))
               for x, y in pairs)


def check_steps(key, batch_size: int, num_steps: int = 3, tolerance: float = 1e-4) -> list[Check]:
    """Each progvi step against the hand-written one fed the same noise, for `num_steps` steps.

    Adam's moments after a step are moving averages of the gradients and their squares, so
    comparing them compares the gradients (the params after an adam step are nearly
    ``-lr * sign(g)`` and would hide an error in the gradient's size). At the first step
    (ρ = 1, u = ŵ) the output bias's gradient ``1 - ŵ / u`` is exactly zero but for rounding,
    which adam turns into a step of about ±lr: there the moments are compared on the scale of the
    whole tree, and the hand-written step continues from the state progvi reached; from the
    second step on, everything is compared leaf by leaf.
    """
    param_key, data_key, step_key = jax.random.split(key, 3)
    params, x = init_params(param_key), two_moons(data_key, batch_size)
    optimizer = optax.adam(LEARNING_RATE)
    hand_step = jax.jit(lambda s, x, ys: handwritten_update(optimizer, s, x, ys))
    step_keys = list(jax.random.split(step_key, 2 * num_steps))
    readers = {form: noise_reader(form, batch_size) for form in ("per_run", "one_site")}
    checks = []
    for name, program in PROGRAMS.items():
        train = pv.make_step(program(batch_size), optax.adam(LEARNING_RATE), direction="minimize")
        step = jax.jit(train.step)
        read_noise = readers["per_run" if name == "per_run" else "one_site"]  # nll: one site
        state = train.init(params, x)
        hand = HandwrittenState(params, optimizer.init(params), jnp.zeros(()), jnp.zeros(()))
        errors = collections.defaultdict(float)
        for t in range(num_steps):
            ys = read_noise(step_keys[t])
            control, _ = hand_step(hand, x, read_noise(step_keys[num_steps + t]))
            state, value = step(state, step_keys[t], x)
            hand, hand_value = hand_step(hand, x, ys)
            estimate = state.estimator_state["log_weight"]
            for kind, other in (("moments", hand), ("other", control)):
                errors[kind] = max(errors[kind], _relative_error(
                    state.opt_state, other.opt_state, per_leaf=t > 0))
            errors["log_u"] = max(errors["log_u"], abs(float(estimate.log_u) - float(hand.log_u)))
            errors["value"] = max(errors["value"], abs(float(value) - float(hand_value)))
            if t == 0:
                hand = HandwrittenState(state.params, state.opt_state, estimate.log_u,
                                        estimate.weight)
        params_error = _relative_error(state.params, hand.params)
        passed = max(errors["moments"], params_error, errors["log_u"],
                     errors["value"]) <= tolerance
        checks.append(Check(name, errors["moments"], params_error, errors["log_u"],
                            errors["value"], errors["other"], passed))
    return checks


# --- timing (as in vae_step.py) ------------------------------------------------------------------


class Row(NamedTuple):
    batch_size: int
    calls: int
    step_ms: dict[str, float]  # median time per step, by implementation
    compile_s: dict[str, float]  # median trace + lower + compile, by implementation

    def ratio(self, name: str) -> float:
        return self.step_ms[name] / self.step_ms["handwritten"]

    def compile_ratio(self, name: str) -> float:
        return self.compile_s[name] / self.compile_s["handwritten"]


def _compile(factory, batch_size, key, params, x):
    """A fresh step, traced, lowered and compiled; returns (compiled, carry, seconds)."""
    init, step = factory(batch_size)
    carry = init(key, params, x)
    start = time.perf_counter()
    compiled = jax.jit(step).lower(carry, x).compile()
    return compiled, carry, time.perf_counter() - start


def measure(batch_size: int, seconds: float, compile_reps: int, implementations, key,
            max_calls: int = 2000, min_calls: int = 15) -> Row:
    params = init_params(jax.random.fold_in(key, 1))
    x = two_moons(jax.random.fold_in(key, 2), batch_size)
    compile_times = {name: [] for name in implementations}
    runs = {}
    for _ in range(compile_reps):
        for name, factory in implementations.items():
            compiled, carry, elapsed = _compile(factory, batch_size, key, params, x)
            compile_times[name].append(elapsed)
            runs[name] = (compiled, carry)
    for compiled, carry in runs.values():  # warm up
        jax.block_until_ready(compiled(carry, x))
    probe = time.perf_counter()
    jax.block_until_ready(runs["handwritten"][0](runs["handwritten"][1], x))
    one_call = time.perf_counter() - probe
    calls = int(min(max_calls, max(min_calls, seconds / max(one_call, 1e-6))))
    times = {name: [] for name in implementations}
    names = list(implementations)
    for r in range(calls):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            compiled, carry = runs[name]
            start = time.perf_counter()
            jax.block_until_ready(compiled(carry, x))
            times[name].append(time.perf_counter() - start)
    return Row(
        batch_size, calls,
        {name: 1e3 * statistics.median(t) for name, t in times.items()},
        {name: statistics.median(t) for name, t in compile_times.items()},
    )


# --- compiled-program statistics, for finding where a gap comes from -----------------------------


def _op_counts(hlo_text: str) -> tuple[collections.Counter, collections.Counter]:
    """Ops of the entry computation by opcode, and ops of the whole module by opcode."""
    instruction = re.compile(r"^\s+(?:ROOT\s+)?\S+\s=\s.*?\s([a-z][\w-]*)\(")
    entry, total, in_entry = collections.Counter(), collections.Counter(), False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
        elif line.startswith("}"):
            in_entry = False
        elif match := instruction.match(line):
            total[match.group(1)] += 1
            if in_entry:
                entry[match.group(1)] += 1
    return entry, total


def hlo_report(batch_size: int, implementations, key) -> str:
    """Op counts of each compiled step (entry ops that differ, dots and transcendentals of the
    whole module) and XLA's flop and memory-traffic counts."""
    params = init_params(jax.random.fold_in(key, 1))
    x = two_moons(jax.random.fold_in(key, 2), batch_size)
    entry, total, flops, traffic = {}, {}, {}, {}
    for name, factory in implementations.items():
        compiled, _, _ = _compile(factory, batch_size, key, params, x)
        entry[name], total[name] = _op_counts(compiled.as_text())
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops[name] = (cost or {}).get("flops", float("nan"))
        traffic[name] = (cost or {}).get("bytes accessed", float("nan"))
    names = list(implementations)
    lines = [
        f"Compiled steps at batch {batch_size}: entry-computation ops whose counts differ, and "
        "some ops of the whole module",
        "",
        "| op | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for op in sorted(set().union(*entry.values())):
        row = [entry[n][op] for n in names]
        if len(set(row)) > 1:
            lines.append(f"| entry {op} | " + " | ".join(map(str, row)) + " |")
    for op in ("dot", "exponential", "log", "log-plus-one", "exponential-minus-one"):
        lines.append(f"| all {op} | " + " | ".join(str(total[n][op]) for n in names) + " |")
    lines.append("| entry ops | " + " | ".join(str(sum(entry[n].values())) for n in names) + " |")
    lines.append("| all instructions | " + " | ".join(str(sum(total[n].values())) for n in names)
                 + " |")
    lines.append("| flops | " + " | ".join(f"{flops[n]:.4g}" for n in names) + " |")
    lines.append("| bytes accessed | " + " | ".join(f"{traffic[n]:.4g}" for n in names) + " |")
    return "\n".join(lines)


# --- report --------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Row], names: Sequence[str]) -> str:
    progvi = [n for n in names if n != "handwritten"]
    header = (["batch", "JAX ms"] + [c for n in progvi for c in (f"{n} ms", f"{n} / JAX")]
              + ["compile s (" + ", ".join(["JAX", *progvi]) + ")",
                 "compile / JAX (" + ", ".join(progvi) + ")", "calls"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        cells = [str(r.batch_size), f"{r.step_ms['handwritten']:.3f}"]
        for n in progvi:
            cells += [f"{r.step_ms[n]:.3f}", f"{r.ratio(n):.3f}"]
        cells.append(", ".join(f"{r.compile_s[n]:.2f}" for n in ["handwritten", *progvi]))
        cells.append(", ".join(f"{r.compile_ratio(n):.2f}" for n in progvi))
        cells.append(str(r.calls))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict[str, str]:
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}: {device.device_kind} (x{jax.device_count()})",
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "jax": jax.__version__,
        "optax": optax.__version__,
        "progvi": pv.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def report(rows, checks, names, command, note="", extra=()) -> str:
    misses = [
        f"{n} at batch {r.batch_size} (step {r.ratio(n):.3f}, compile {r.compile_ratio(n):.2f})"
        for r in rows for n in PROGRAMS
        if r.ratio(n) > TARGET_RATIO or r.compile_ratio(n) > TARGET_COMPILE_RATIO
    ]
    verdict = (
        f"All ratios are within the targets (step {TARGET_RATIO}, compile "
        f"{TARGET_COMPILE_RATIO})." if not misses
        else f"Above the targets (step {TARGET_RATIO}, compile {TARGET_COMPILE_RATIO}): "
        + "; ".join(misses) + "."
    )
    check_lines = [
        f"- {c.name}: gradients (adam's moments) {c.moments_error:.1e}, params "
        f"{c.params_error:.1e}, log u {c.log_u_error:.1e}, value {c.value_error:.1e} "
        f"({'pass' if c.passed else 'FAIL'}); "
        f"with another key's noise the moments differ by {c.other_noise_error:.2f}"
        for c in checks
    ]
    return "\n".join([
        "# Energy-model training step with the compositional estimator: progvi vs JAX",
        "",
        *[f"- {k}: {v}" for k, v in environment().items()],
        f"- command: `{command}`",
        *([f"- note: {note}"] if note else []),
        "",
        "One adam step of a 2-D energy model (MLP 2-128-128-1, softplus) on B data points and B "
        f"noise points from N(0, {NOISE_SCALE**2:g} I), MECO with gamma = {GAMMA}: median wall "
        "time of synchronized calls, interleaved; compile = trace + lower + compile (median). "
        "Ratios are to the hand-written JAX step.",
        "",
        markdown_table(rows, names),
        "",
        verdict,
        "",
        "Each progvi step against the hand-written one fed the noise the program drew (max "
        "relative errors over the steps checked):",
        "",
        *check_lines,
        *[line for section in extra for line in ("", section)],
        "",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help=f"default {' '.join(map(str, BATCH_SIZES))} (--quick: 256 1024)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="approximate timing budget per implementation and batch size "
                        "(default 3; --quick: 0.3)")
    parser.add_argument("--compile-reps", type=int, default=None,
                        help="fresh compilations per implementation (default 5; --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few calls: a run in seconds, to see that it works "
                        "(its timings are noise)")
    parser.add_argument("--check-batch", type=int, default=64,
                        help="batch size of the correctness check")
    parser.add_argument("--diagnostics", action="store_true",
                        help="also time a hand-written step that derives one key per noise "
                        "point as the per-run program does")
    parser.add_argument("--hlo", action="store_true",
                        help="also report op counts and flops of the compiled steps")
    parser.add_argument("--note", default="", help="a line about the machine, for the report")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="markdown output (default: results/unnormalized_step_<backend>.md)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.batch_sizes is None:
        args.batch_sizes = [256, 1024] if quick else list(BATCH_SIZES)
    if args.seconds is None:
        args.seconds = 0.3 if quick else 3.0
    if args.compile_reps is None:
        args.compile_reps = 1 if quick else 5
    return args


def main(argv: Sequence[str] | None = None) -> tuple[list[Row], list[Check], str]:
    """Runs the check and the benchmark; returns the rows, the checks and the markdown report."""
    args = parse_args(argv)
    key = jax.random.key(0)
    checks = check_steps(jax.random.key(1), args.check_batch)
    for c in checks:
        print(f"check {c.name}: moments {c.moments_error:.1e}, params {c.params_error:.1e}, "
              f"log u {c.log_u_error:.1e}, value {c.value_error:.1e}; other noise "
              f"{c.other_noise_error:.2f}", flush=True)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        raise AssertionError(f"progvi's step differs from the hand-written one: {failed}")
    implementations = IMPLEMENTATIONS | (DIAGNOSTICS if args.diagnostics else {})
    names = list(implementations)
    rows, hlo = [], []
    for batch_size in args.batch_sizes:
        rows.append(measure(batch_size, args.seconds, args.compile_reps, implementations, key,
                            min_calls=5 if args.quick else 15))
        table = markdown_table(rows, names).splitlines()
        if len(rows) == 1:
            print("\n".join(table[:2]))
        print(table[-1], flush=True)
        if args.hlo:
            hlo.append(hlo_report(batch_size, implementations, key))
            print(hlo[-1], flush=True)
    command = " ".join(["python benchmarks/unnormalized_step.py",
                        *(sys.argv[1:] if argv is None else argv)])
    text = report(rows, checks, names, command, args.note, hlo)
    print("\n" + text)
    out = args.out or RESULTS / f"unnormalized_step_{jax.default_backend()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return rows, checks, text


if __name__ == "__main__":
    main()
