"""Seconds per epoch of AIR training at batch 64: progvi's estimators against Pyro's AIR.

progvi runs the model and guide of `examples/air.py` (the PLDI 2024 artifact's sizes) with
REINFORCE, enumeration, MVD, IWAE + REINFORCE and IWAE + MVD, each a `pv.make_step` step
(compiled once, then timed over `--steps` steps with `block_until_ready`; Pyro takes one
untimed step first too). Pyro runs the same
model and guide written as Pyro's AIR example (`benchmarks/baselines/pyro_air.py`) with
`TraceGraph_ELBO`, `TraceEnum_ELBO` (sequential enumeration of the presence choices) and
`RenyiELBO(alpha=0)` (IWAE), on the same scenes, in a subprocess with the interpreter of
`benchmarks/baselines/.venv` (made by `benchmarks/baselines/make_env.sh`); Pyro has no MVD.
Without that environment the progvi side runs alone. A second per epoch is a second per step
times the steps of an epoch of `--epoch-size` scenes (60,000: multi-MNIST's size).
Beside each progvi time: XLA's FLOP count of the compiled step and the rate it runs at, and the
rate of a dense 2048x2048 matmul on the same backend, about the most a step can reach.

    bash benchmarks/baselines/make_env.sh                 # once: torch + pyro-ppl
    python benchmarks/air_epoch.py                        # writes results/air_epoch_<backend>.md
    python benchmarks/air_epoch.py --side 24 --steps 3    # a quick look

The paper's Table 2 (a GPU) reports progvi/genjax over Pyro at 8.1x (REINFORCE), 19.8x
(enumeration) and 9.7x (IWAE).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import progvi as pv

HERE = pathlib.Path(__file__).resolve().parent
PYRO_PYTHON = HERE / "baselines" / ".venv" / "bin" / "python"
DENSE_N = 2048
ESTIMATORS = ("reinforce", "enum", "mvd", "iwae-reinforce", "iwae-mvd")
PYRO_HAS = ("reinforce", "enum", "iwae-reinforce")


def load_air():
    spec = importlib.util.spec_from_file_location("air_example",
                                                  HERE.parent / "examples" / "air.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_progvi(air, name, cfg, images, batch_size, steps, k, seed):
    """(seconds per step, seconds to compile, GFLOP per step) of one estimator's training step.

    The GFLOP are XLA's count for the compiled step (`cost_analysis`), the arithmetic the
    estimator needs whatever runs it.
    """
    program = air.objective(name, cfg, k)
    step = pv.make_step(program, optax.adam(1e-4), direction="maximize", per_datapoint=True)
    params = air.init_params(jax.random.key(seed), cfg)
    batches = [images[(i * batch_size) % len(images):][:batch_size] for i in range(steps + 1)]
    state = step.init(params, batches[0])
    key = jax.random.key(seed + 1)
    start = time.perf_counter()
    compiled = jax.jit(step.step).lower(state, jax.random.fold_in(key, 0), batches[0]).compile()
    state, value = compiled(state, jax.random.fold_in(key, 0), batches[0])
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i, batch in enumerate(batches[1:], 1):
        state, value = compiled(state, jax.random.fold_in(key, i), batch)
    jax.block_until_ready(state)
    if not bool(jnp.isfinite(value)):
        raise RuntimeError(f"progvi {name}: the objective is not finite ({value}).")
    gflop = compiled.cost_analysis()["flops"] / 1e9
    return (time.perf_counter() - start) / steps, compile_s, gflop


def dense_rate(n, reps=10):
    """GFLOP/s of an n x n float32 matmul on this backend: the rate a step could hope for."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(times)) / 1e9


def time_pyro(data_path, names, batch_size, steps, k, max_objects, cfg, python):
    """{estimator: seconds per step} from the Pyro subprocess, or None without its env."""
    if not pathlib.Path(python).exists():
        return None
    command = [str(python), str(HERE / "baselines" / "pyro_air.py"), "--data", str(data_path),
               "--estimators", ",".join(names), "--steps", str(steps), "--warmup", "1",
               "--batch-size", str(batch_size), "--k", str(k), "--max-objects", str(max_objects),
               "--pres-prior", str(cfg.pres_prior),
               "--pres-exponents", ",".join(str(e) for e in cfg.pres_exponents)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the Pyro side failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["estimator"]: row for row in rows}


def table(rows, pyro, args, epoch_steps, dense_gflops):
    lines = [
        f"# AIR: seconds per epoch at batch {args.batch_size} ({jax.default_backend()})", "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, jax "
        f"{jax.__version__}; {args.side}x{args.side} canvas, {args.max_objects + 1} steps, "
        f"K = {args.k}; an epoch = {epoch_steps} steps ({args.epoch_size} scenes); "
        f"{args.steps} timed steps per estimator after one compiling step.",
    ]
    if args.note:
        lines.append(args.note)
    if pyro:
        first = next(iter(pyro.values()))
        lines.append(f"Pyro {first['pyro']}, torch {first['torch']} ({first['threads']} "
                     "threads), in a subprocess.")
    lines.append(f"A {DENSE_N}x{DENSE_N} float32 matmul runs at {dense_gflops:.0f} GFLOP/s here. "
                 "GFLOP/step: XLA's count for progvi's compiled step; GFLOP/s: that count over "
                 "the step's time.")
    lines += ["", "| estimator | progvi s/epoch | Pyro s/epoch | Pyro / progvi | progvi compile "
              "(s) | GFLOP/step | GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for name, (per_step, compile_s, gflop) in rows.items():
        mine = per_step * epoch_steps
        if pyro and name in pyro:
            theirs = pyro[name]["seconds_per_step"] * epoch_steps
            other, ratio = f"{theirs:.1f}", f"{theirs / mine:.1f}x"
        else:
            other = ratio = "n/a (no MVD in Pyro)" if name not in PYRO_HAS else "not run"
        lines.append(f"| {name} | {mine:.1f} | {other} | {ratio} | {compile_s:.1f} | "
                     f"{gflop:.2f} | {gflop / per_step:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--side", type=int, default=50)
    parser.add_argument("--max-objects", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per estimator")
    parser.add_argument("--epoch-size", type=int, default=60000)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pyro-python", default=str(PYRO_PYTHON),
                        help="the interpreter with torch and pyro-ppl")
    parser.add_argument("--no-pyro", action="store_true", help="time the progvi side only")
    parser.add_argument("--note", default="", help="a line about the machine, for the table")
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/air_epoch_<backend>.md")
    args = parser.parse_args(argv)
    names = [n for n in args.estimators.split(",") if n]
    unknown = sorted(set(names) - set(ESTIMATORS))
    if unknown:
        parser.error(f"--estimators: unknown {unknown}; choose from {', '.join(ESTIMATORS)}")
    air = load_air()
    cfg = air.Config(side=args.side, steps=args.max_objects + 1)
    digits = air.air_data.digit_images("digits")
    scenes = air.air_data.make_scenes(digits, args.batch_size * 4, side=args.side,
                                      max_objects=args.max_objects, seed=args.seed)
    images = jnp.asarray(scenes.images)
    epoch_steps = args.epoch_size // args.batch_size

    rows = {}
    for name in names:
        rows[name] = time_progvi(air, name, cfg, images, args.batch_size, args.steps, args.k,
                                 args.seed)
        per_step, compile_s, gflop = rows[name]
        print(f"progvi {name}: {per_step:.3f} s/step (compile {compile_s:.1f} s), "
              f"{gflop:.2f} GFLOP/step", flush=True)
    pyro = None
    if not args.no_pyro:
        with tempfile.TemporaryDirectory() as folder:
            data_path = pathlib.Path(folder) / "scenes.npy"
            np.save(data_path, scenes.images)
            pyro = time_pyro(data_path, [n for n in names if n in PYRO_HAS], args.batch_size,
                             args.steps, args.k, args.max_objects, cfg,
                             args.pyro_python)
        if pyro is None:
            print(f"no Pyro environment at {args.pyro_python}: run "
                  "benchmarks/baselines/make_env.sh for the comparison", file=sys.stderr)
    text = table(rows, pyro, args, epoch_steps, dense_rate(DENSE_N))
    out = pathlib.Path(args.out or HERE / "results" / f"air_epoch_{jax.default_backend()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return rows, pyro, text


if __name__ == "__main__":
    main()
