"""Data-parallel training on several hosts with `jax.distributed`: the same `pv.fit` everywhere.

Every process runs this script with its own `--process-id`; they meet at `--coordinator`, and
`jax.devices()` then lists the devices of all of them. The batch's leading axis is split over a
mesh of every device (`sharding=mesh`); XLA inserts the all-reduces, progvi adds nothing. Each
process holds the whole (small) data set; the result is the same on every process.

On one machine, two processes of four CPU devices each stand in for two hosts:

    python examples/distributed.py --num-processes 2 --process-id 0 --local-devices 4 &
    python examples/distributed.py --num-processes 2 --process-id 1 --local-devices 4

On a cluster, start one process per host with the coordinator's address (on SLURM or with
Cloud TPUs, `jax.distributed.initialize()` finds all of this itself).
"""

from __future__ import annotations

import argparse
import os


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", default="localhost:12355")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--local-devices", type=int, default=0,
                        help="CPU devices per process (0: the machine's own devices)")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    if args.local_devices:  # before jax is imported
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.local_devices}"

    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro.distributions as dist
    import optax
    from jax.sharding import Mesh

    import progvi as pv

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    data = np.asarray(2.0 + jax.random.normal(jax.random.key(0), (1024,)))

    @pv.expectation
    def local_elbo(phi, x):  # z ~ N(0, 1), x_i ~ N(z, 1); guide N(m, exp(log_s))
        q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
        z = pv.sample("z", q)
        return dist.Normal(z, 1.0).log_prob(x) + (
            dist.Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)) / len(data)

    result = pv.fit(jax.random.key(1), local_elbo, {"m": 0.0, "log_s": 0.0},
                    optax.adam(optax.cosine_decay_schedule(0.05, args.steps)),
                    direction="maximize", num_steps=args.steps, data=data,
                    batch_size=8 * len(jax.devices()), per_datapoint=True, sharding=mesh,
                    progress=False)
    m = float(np.asarray(jax.device_get(result.params["m"])))
    exact = data.sum() / (1 + len(data))
    print(f"process {jax.process_index()} of {jax.process_count()}: {len(jax.devices())} "
          f"devices, posterior mean {m:.3f} (exact {exact:.3f})", flush=True)
    return {"m": m, "exact": float(exact), "devices": len(jax.devices())}


if __name__ == "__main__":
    main()
