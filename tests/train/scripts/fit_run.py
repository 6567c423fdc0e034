"""A fit run in its own process, for the checkpoint and Ctrl-C tests: python fit_run.py MODE DIR."""

import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv

NUM_STEPS, CHUNK = 400, 20
DATA = 2.0 + jax.random.normal(jax.random.key(7), (64,))
ADAM = optax.adam(0.02)


@pv.expectation
def elbo(phi, x):
    q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
    baseline = pv.train.moving_average_baseline(0.9)
    z = pv.sample("z", q, strategy=pv.reinforce(baseline=baseline))
    pv.report("z", z)
    return dist.Normal(z, 1.0).log_prob(x) + (dist.Normal(0.0, 1.0).log_prob(z)
                                              - q.log_prob(z)) / 64


PARAMS = {"m": jnp.array(0.0), "log_s": jnp.array(0.0)}


def run(directory, num_steps=NUM_STEPS, resume=None, callback=None, chunk_size=CHUNK):
    return pv.fit(jax.random.key(3), elbo, PARAMS, ADAM, direction="maximize",
                  num_steps=num_steps, data=DATA, batch_size=16, per_datapoint=True,
                  chunk_size=chunk_size, checkpoint_dir=directory,
                  checkpoint_every=None if directory is None else CHUNK,
                  resume=resume, callback=callback, progress=False)


if __name__ == "__main__":
    mode, directory = sys.argv[1], pathlib.Path(sys.argv[2])

    def slow(step, state, value):  # leaves time to kill or interrupt the run between chunks
        (directory / "running").touch()
        time.sleep(0.2)

    if mode == "checkpoint":
        run(directory, callback=slow)
    elif mode == "interrupt":
        result = run(directory, callback=slow)
        print(f"interrupted={result.interrupted} step={result.step}", flush=True)
    elif mode == "one-chunk":
        (directory / "running").touch()
        result = run(None, num_steps=3000, chunk_size=3000)
        print(f"interrupted={result.interrupted} step={result.step} "
              f"finite={bool(np.isfinite(result.history).all())}", flush=True)
