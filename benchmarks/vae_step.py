"""One VAE training step: `pv.make_step` against the same step hand-written in JAX and NumPyro SVI.

The model is the classic MNIST VAE: a 784-200-(10+10) encoder, a 10-200-784 decoder with a
Bernoulli likelihood, a standard normal prior, the reparameterized ELBO averaged over the batch,
and adam. All three implementations share the networks, the initial parameters, the data and the
optimizer (optax.adam; NumPyro gets it through `optax_to_numpyro`):

* progvi: a per-datapoint expectation program, vmapped and averaged by
  ``pv.make_step(..., per_datapoint=True)``;
* JAX: the same estimator hand-written: one ``jax.random.normal`` for the whole batch,
  ``jax.value_and_grad`` and the optax update;
* NumPyro: ``numpyro.infer.SVI`` with ``Trace_ELBO``, the networks as ``numpyro.param`` sites
  in a model and a guide, the plate scaled by 1/batch so that it is the same mean ELBO.

Step times are medians over many calls, each synchronized with ``block_until_ready``, the three
implementations interleaved call by call so that machine load affects them alike. Compile times
(trace, lower and compile, with fresh functions each time) are medians too. Ratios are to the
hand-written JAX step.

Usage: python benchmarks/vae_step.py [--batch-sizes 64,256,1024,4096,16384] [--seconds 3]
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
from numpyro.infer import SVI, Trace_ELBO
from numpyro.optim import optax_to_numpyro

import progvi as pv

PIXELS, HIDDEN, LATENT = 784, 200, 10
LEARNING_RATE = 1e-3


def init_params(key):
    def dense(key, n_in, n_out):
        return {"w": jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros(n_out)}

    keys = jax.random.split(key, 5)
    return {
        "enc_hidden": dense(keys[0], PIXELS, HIDDEN),
        "enc_mean": dense(keys[1], HIDDEN, LATENT),
        "enc_log_std": dense(keys[2], HIDDEN, LATENT),
        "dec_hidden": dense(keys[3], LATENT, HIDDEN),
        "dec_logits": dense(keys[4], HIDDEN, PIXELS),
    }


def _dense(layer, x):
    return x @ layer["w"] + layer["b"]


def encode(params, x):
    h = jax.nn.relu(_dense(params["enc_hidden"], x))
    return _dense(params["enc_mean"], h), _dense(params["enc_log_std"], h)


def decode(params, z):
    return _dense(params["dec_logits"], jax.nn.relu(_dense(params["dec_hidden"], z)))


def log_joint_minus_guide(params, x, z, mean, log_std):
    """log p(x | z) + log p(z) - log q(z | x), summed over the last axis."""
    q = dist.Normal(mean, jnp.exp(log_std))
    log_lik = dist.Bernoulli(logits=decode(params, z)).log_prob(x).sum(-1)
    return log_lik + dist.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


# -- progvi ---------------------------------------------------------------------------------------


def progvi_step():
    @pv.expectation
    def elbo(params, x):
        mean, log_std = encode(params, x)
        z = pv.sample("z", dist.Normal(mean, jnp.exp(log_std)))
        return log_joint_minus_guide(params, x, z, mean, log_std)

    train = pv.make_step(elbo, optax.adam(LEARNING_RATE), direction="maximize",
                         per_datapoint=True)

    def init(key, params, x):
        return (train.init(params), key)

    def step(carry, x):
        state, key = carry
        state, value = train.step(state, key, x)
        return (state, key), value

    return init, step


# -- hand-written JAX -----------------------------------------------------------------------------


def jax_step():
    optimizer = optax.adam(LEARNING_RATE)

    def loss(params, key, x):
        mean, log_std = encode(params, x)
        z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return -jnp.mean(log_joint_minus_guide(params, x, z, mean, log_std))

    def init(key, params, x):
        return (params, optimizer.init(params), key)

    def step(carry, x):
        params, opt_state, key = carry
        value, grads = jax.value_and_grad(loss)(params, key, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), -value

    return init, step


# -- NumPyro SVI ----------------------------------------------------------------------------------


def numpyro_step():
    def model(x, init):
        dec = {k: {n: numpyro.param(f"{k}_{n}", v) for n, v in init[k].items()}
               for k in ("dec_hidden", "dec_logits")}
        with numpyro.plate("data", x.shape[0]), numpyro.handlers.scale(scale=1.0 / x.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=decode(dec, z)).to_event(1), obs=x)

    def guide(x, init):
        enc = {k: {n: numpyro.param(f"{k}_{n}", v) for n, v in init[k].items()}
               for k in ("enc_hidden", "enc_mean", "enc_log_std")}
        with numpyro.plate("data", x.shape[0]), numpyro.handlers.scale(scale=1.0 / x.shape[0]):
            mean, log_std = encode(enc, x)
            numpyro.sample("z", dist.Normal(mean, jnp.exp(log_std)).to_event(1))

    svi = SVI(model, guide, optax_to_numpyro(optax.adam(LEARNING_RATE)), Trace_ELBO())

    def init(key, params, x):
        return (svi.init(key, x, params), params)

    def step(carry, x):
        svi_state, params = carry
        svi_state, loss = svi.update(svi_state, x, params)
        return (svi_state, params), -loss

    return init, step


IMPLEMENTATIONS = {"progvi": progvi_step, "JAX": jax_step, "NumPyro": numpyro_step}


def _compile(factory, key, params, x):
    """A fresh step, traced, lowered and compiled; returns (compiled, carry, seconds)."""
    init, step = factory()
    carry = init(key, params, x)
    start = time.perf_counter()
    compiled = jax.jit(step).lower(carry, x).compile()
    return compiled, carry, time.perf_counter() - start


def measure(batch_size, seconds, compile_reps, key):
    params = init_params(jax.random.fold_in(key, 1))
    x = (jax.random.uniform(jax.random.fold_in(key, 2), (batch_size, PIXELS)) < 0.3).astype(
        jnp.float32)
    compile_times = {name: [] for name in IMPLEMENTATIONS}
    runs = {}
    for _ in range(compile_reps):
        for name, factory in IMPLEMENTATIONS.items():
            compiled, carry, elapsed = _compile(factory, key, params, x)
            compile_times[name].append(elapsed)
            runs[name] = (compiled, carry)
    for compiled, carry in runs.values():  # warm up
        jax.block_until_ready(compiled(carry, x))
    probe = time.perf_counter()
    jax.block_until_ready(runs["JAX"][0](runs["JAX"][1], x))
    one_call = time.perf_counter() - probe
    reps = int(min(2000, max(15, seconds / max(one_call, 1e-6))))
    times = {name: [] for name in IMPLEMENTATIONS}
    names = list(IMPLEMENTATIONS)
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            compiled, carry = runs[name]
            start = time.perf_counter()
            jax.block_until_ready(compiled(carry, x))
            times[name].append(time.perf_counter() - start)
    return (
        {name: statistics.median(t) for name, t in times.items()},
        {name: statistics.median(t) for name, t in compile_times.items()},
        reps,
    )


def check_same_objective(key):
    """All three compute the same mean ELBO at the same params (up to their random draws)."""
    params = init_params(jax.random.fold_in(key, 1))
    x = (jax.random.uniform(jax.random.fold_in(key, 2), (512, PIXELS)) < 0.3).astype(jnp.float32)
    values = {}
    for name, factory in IMPLEMENTATIONS.items():
        init, step = factory()
        _, value = jax.jit(step)(init(key, params, x), x)
        values[name] = float(value)
    spread = max(values.values()) - min(values.values())
    assert spread < 0.02 * abs(values["JAX"]), f"the implementations disagree: {values}"
    return values


def main(argv=None):
    """Runs the benchmark; returns the rows (a dict per batch size) and the markdown written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="64,256,1024,4096,16384")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="approximate timing budget per implementation and batch size")
    parser.add_argument("--compile-reps", type=int, default=5)
    parser.add_argument("--note", default="", help="a line about the machine, for the table")
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/vae_step_<backend>.md")
    args = parser.parse_args(argv)

    key = jax.random.key(0)
    values = check_same_objective(key)
    device = jax.devices()[0]
    rows, lines_out = [], []
    header = ("| batch | progvi ms | JAX ms | NumPyro ms | progvi / JAX | NumPyro / JAX "
              "| compile s (progvi, JAX, NumPyro) | compile progvi / JAX "
              "| compile NumPyro / JAX | calls |")
    print(header)
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        step, comp, reps = measure(batch_size, args.seconds, args.compile_reps, key)
        rows.append({"batch_size": batch_size, "step_s": step, "compile_s": comp, "calls": reps})
        row = (
            f"| {batch_size} | {1e3 * step['progvi']:.3f} | {1e3 * step['JAX']:.3f} "
            f"| {1e3 * step['NumPyro']:.3f} | {step['progvi'] / step['JAX']:.3f} "
            f"| {step['NumPyro'] / step['JAX']:.3f} "
            f"| {comp['progvi']:.2f}, {comp['JAX']:.2f}, {comp['NumPyro']:.2f} "
            f"| {comp['progvi'] / comp['JAX']:.2f} "
            f"| {comp['NumPyro'] / comp['JAX']:.2f} | {reps} |"
        )
        lines_out.append(row)
        print(row, flush=True)

    out = pathlib.Path(args.out or pathlib.Path(__file__).parent / "results"
                       / f"vae_step_{jax.default_backend()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# VAE training step ({jax.default_backend()})",
        "",
        f"Generated by `benchmarks/vae_step.py` on {datetime.date.today().isoformat()}: "
        f"{device.device_kind} ({platform.machine()}), jax {jax.__version__}, "
        f"numpyro {numpyro.__version__}, optax {optax.__version__}.",
        *([args.note] if args.note else []),
        "",
        "One step of a 784-200-10 VAE (Bernoulli likelihood, reparameterized ELBO, adam): median "
        "wall time of synchronized calls, interleaved; compile = trace + lower + compile "
        f"(median of {args.compile_reps}). Ratios are to the hand-written JAX step; the target "
        "is progvi / JAX <= 1.05 and compile <= 1.5.",
        "",
        "Mean ELBO at the initial params, one draw each (a check that they compute the same "
        "thing): " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()) + ".",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|",
        *lines_out,
        "",
    ]
    text = "\n".join(lines)
    out.write_text(text)
    print(f"wrote {out}")
    return rows, text


if __name__ == "__main__":
    main()
