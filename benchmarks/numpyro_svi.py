"""NumPyro models trained by progvi against NumPyro's own SVI: loss, gradient and step time.

Each case is a NumPyro model and guide run unchanged, once through ``pv.interop.numpyro`` and
``pv.make_step`` (the ELBO as an expectation program) and once through ``numpyro.infer.SVI``
(``svi.update``), both jitted, with optax's adam and the same initial params:

* eight_schools: the non-centred eight schools with ``AutoNormal`` (``Trace_ELBO``);
* mixture_model_enum: a Gaussian mixture of N points whose assignments the model enumerates,
  ``AutoDelta`` on the rest (``TraceEnum_ELBO``);
* mixture_guide_enum: the same mixture, the assignments enumerated by the guide (each point's
  own responsibilities, ``TraceEnum_ELBO``).

Before timing, each case checks that both give the same loss (and, where the estimate is
deterministic, the same gradient) at the initial params. Step times are medians of synchronized
calls, the two implementations interleaved call by call; compile times are of fresh functions.

Usage: python benchmarks/numpyro_svi.py [--points 1000] [--seconds 3] [--out FILE]
(the committed table: --out benchmarks/results/numpyro_svi_cpu.md)
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoNormal
from numpyro.optim import optax_to_numpyro

import progvi as pv

LEARNING_RATE = 0.01
K = 3


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def mixture(data):
    weights = numpyro.sample("weights", dist.Dirichlet(0.5 * jnp.ones(K)))
    with numpyro.plate("components", K):
        locs = numpyro.sample("locs", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", len(data)):
        z = numpyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


def responsibilities(data):
    weights = numpyro.param("q_weights", jnp.ones(K) / K, constraint=dist.constraints.simplex)
    numpyro.sample("weights", dist.Delta(weights, event_dim=1))
    locs = numpyro.param("q_locs", jnp.linspace(-5.0, 5.0, K))
    with numpyro.plate("components", K):
        numpyro.sample("locs", dist.Delta(locs))
    logits = numpyro.param("logits", -0.5 * (data[:, None] - jnp.linspace(-5.0, 5.0, K)) ** 2)
    with numpyro.plate("data", len(data)):
        numpyro.sample("z", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})


def cases(points, key):
    sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    centres = jnp.array([-6.0, 0.0, 7.0])
    data = centres[jax.random.randint(key, (points,), 0, K)] + jax.random.normal(
        jax.random.fold_in(key, 1), (points,))
    return {
        "eight_schools": (eight_schools, AutoNormal(eight_schools), Trace_ELBO(), (sigma, y),
                          False),
        "mixture_model_enum": (mixture, AutoDelta(numpyro.handlers.block(mixture, hide=["z"])),
                               TraceEnum_ELBO(max_plate_nesting=1), (data,), True),
        "mixture_guide_enum": (mixture, responsibilities, TraceEnum_ELBO(max_plate_nesting=1),
                               (data,), True),
    }


def _progvi(model_fn, guide_fn, args):
    model = pv.interop.numpyro(model_fn)
    guide = pv.interop.numpyro(guide_fn, params=True)

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, guide, {}, model_args=args, guide_args=(params, *args))

    train = pv.make_step(elbo, optax.adam(LEARNING_RATE), direction="maximize")
    return elbo, train, guide


def build(case, key):
    model_fn, guide_fn, loss, args, deterministic = case
    svi = SVI(model_fn, guide_fn, optax_to_numpyro(optax.adam(LEARNING_RATE)), loss)
    svi_state = svi.init(jax.random.fold_in(key, 0), *args)
    elbo, train, guide = _progvi(model_fn, guide_fn, args)
    params = guide.init_params(jax.random.fold_in(key, 0), *args)
    return svi, svi_state, elbo, train, params, deterministic, args


def check(svi, svi_state, elbo, params, deterministic, args, key):
    """The two losses (and gradients, where the estimate has no draw) at the initial params."""
    svi_params = svi.get_params(svi_state)

    def numpyro_loss(unconstrained):
        return svi.loss.loss(key, svi.constrain_fn(unconstrained), svi.model, svi.guide, *args)

    unconstrained = svi.optim.get_params(svi_state.optim_state)
    if deterministic:
        loss, grads = jax.value_and_grad(numpyro_loss)(unconstrained)
        value, progvi_grads = elbo.value_and_grad(key, params)
        grad_error = max(float(jnp.max(jnp.abs(progvi_grads[n] + grads[n])
                                       / (jnp.abs(grads[n]) + 1e-3))) for n in grads)
        return float(-value - loss) / abs(float(loss)), grad_error
    keys = jax.random.split(key, 4000)
    ours = jax.vmap(lambda k: elbo.estimate(k, params))(keys)
    theirs = jax.vmap(lambda k: -svi.loss.loss(k, svi_params, svi.model, svi.guide, *args))(keys)
    se = float(jnp.sqrt((jnp.var(ours) + jnp.var(theirs)) / len(keys)))
    return float(jnp.mean(ours) - jnp.mean(theirs)) / se, None


def _timed_compile(make):
    start = time.perf_counter()
    compiled = make()
    return compiled, time.perf_counter() - start


def measure(case, seconds, key):
    svi, svi_state, elbo, train, params, deterministic, args = build(case, key)
    agreement = check(svi, svi_state, elbo, params, deterministic, args, key)
    state = train.init(params)

    def make_progvi():
        return jax.jit(lambda s, k: train.step(s, k)).lower(state, key).compile()

    def make_numpyro():
        return jax.jit(lambda s: svi.update(s, *args)).lower(svi_state).compile()

    progvi_step, progvi_compile = _timed_compile(make_progvi)
    numpyro_step, numpyro_compile = _timed_compile(make_numpyro)
    calls = {"progvi": lambda: progvi_step(state, key), "NumPyro SVI": lambda: numpyro_step(
        svi_state)}
    for call in calls.values():
        jax.block_until_ready(call())
    probe = time.perf_counter()
    jax.block_until_ready(calls["NumPyro SVI"]())
    reps = int(min(3000, max(30, seconds / max(time.perf_counter() - probe, 1e-6))))
    times = {name: [] for name in calls}
    names = list(calls)
    for r in range(reps):
        for name in names[r % 2:] + names[:r % 2]:
            start = time.perf_counter()
            jax.block_until_ready(calls[name]())
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return medians, {"progvi": progvi_compile, "NumPyro SVI": numpyro_compile}, reps, agreement


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="datapoints of the mixture")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per case")
    parser.add_argument("--cases", default=None, help="comma-separated subset of the cases")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the table here")
    args = parser.parse_args(argv)
    key = jax.random.key(0)
    chosen = cases(args.points, jax.random.fold_in(key, 7))
    if args.cases:
        chosen = {n: chosen[n] for n in args.cases.split(",")}
    lines = [
        f"# NumPyro models: a progvi step against NumPyro's SVI step ({jax.default_backend()})",
        "",
        f"{datetime.date.today()}, {platform.machine()}, jax {jax.__version__}, numpyro "
        f"{numpyro.__version__}; mixture of {args.points} points, K = {K}; adam. Step: median "
        "wall time of synchronized calls, interleaved; compile: trace + lower + compile once. "
        "Agreement at the initial params: relative loss difference and largest relative "
        "gradient difference where the estimate has no draw, else the difference of the mean "
        "ELBO over 4000 draws in standard errors.",
        "",
        "| case | progvi step (ms) | SVI step (ms) | SVI / progvi | progvi compile (s) | "
        "SVI compile (s) | calls | agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = {}
    for name, case in chosen.items():
        medians, compiles, reps, (loss_diff, grad_diff) = measure(case, args.seconds, key)
        rows[name] = {"step": medians, "compile": compiles, "loss": loss_diff, "grad": grad_diff}
        agreement = (f"{loss_diff:.1f} SE" if grad_diff is None
                     else f"loss {loss_diff:.1e}, grad {grad_diff:.1e}")
        lines.append(
            f"| {name} | {1e3 * medians['progvi']:.3f} | {1e3 * medians['NumPyro SVI']:.3f} | "
            f"{medians['NumPyro SVI'] / medians['progvi']:.2f} | {compiles['progvi']:.2f} | "
            f"{compiles['NumPyro SVI']:.2f} | {reps} | {agreement} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return rows, text


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
