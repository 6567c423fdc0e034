"""The smallest end-to-end progvi program: fit a Gaussian guide by maximizing an ELBO.

Model: z ~ N(0, 1), x | z ~ N(z, 1), observed x = 3. The exact posterior is N(1.5, 1/2).
The guide N(m, exp(log_s)) is fitted by stochastic gradient ascent on the reparameterized ELBO,
then again with leave-one-out REINFORCE over 8 draws, chosen from outside the program with
`pv.with_strategies`. It prints the fitted guides beside the exact posterior and writes
`quickstart.png` (the three densities, and each fit's ELBO estimates) to `--out`.

    python examples/quickstart.py             # seconds
"""

import argparse
import math
import pathlib

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

import progvi as pv

X = 3.0


@pv.expectation
def elbo(phi):
    q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
    z = pv.sample("z", q)
    return dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(X) - q.log_prob(z)


def fit(objective, key, steps=2000, lr=0.05):
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    phi = {"m": jnp.array(0.0), "log_s": jnp.array(0.0)}

    @jax.jit
    def step(carry, key):
        phi, state = carry
        value, grad = objective.value_and_grad(key, phi)
        updates, state = opt.update(jax.tree.map(jnp.negative, grad), state)
        return (optax.apply_updates(phi, updates), state), value

    (phi, _), values = jax.lax.scan(step, (phi, opt.init(phi)), jax.random.split(key, steps))
    return phi, values


def plot(fits, path):
    """The exact posterior and each fitted guide (left); each fit's ELBO estimates (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    z = jnp.linspace(-1.0, 4.0, 400)
    left.plot(z, jnp.exp(dist.Normal(1.5, math.sqrt(0.5)).log_prob(z)), "k--", lw=1.5,
              label="exact posterior N(1.5, 1/2)")
    for name, (phi, values) in fits.items():
        left.plot(z, jnp.exp(dist.Normal(phi["m"], jnp.exp(phi["log_s"])).log_prob(z)),
                  lw=1, label=f"guide fitted with {name}")
        right.plot(values, lw=0.6, alpha=0.7, label=name)
    left.set_xlabel("z")
    left.set_ylabel("density")
    left.legend(fontsize=7)
    right.set_xlabel("step")
    log_px = float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(X))
    right.axhline(log_px, color="k", ls="--", lw=1, label=f"log p(x) = {log_px:.3f}")
    right.set_ylabel("ELBO estimate at the step")
    right.set_ylim(-12, 0)
    right.legend(fontsize=7)
    fig.suptitle("z ~ N(0, 1), x | z ~ N(z, 1), x = 3: the guide N(m, s) fitted by two "
                 "gradient estimators", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            'examples/quickstart.py draws with matplotlib: pip install "progvi[examples]"'
        ) from error

    print(f"{'strategy':<10} {'mean':>8} {'std':>8}   (exact posterior: mean 1.5000, std 0.7071)")
    fits = {}
    for name, objective in [
        ("reparam", elbo),
        ("loo-8", pv.with_strategies(elbo, {"z": pv.leave_one_out(num_samples=8)})),
    ]:
        phi, values = fit(objective, jax.random.key(0), steps=args.steps)
        fits[name] = (phi, values)
        print(f"{name:<10} {float(phi['m']):>8.4f} {float(jnp.exp(phi['log_s'])):>8.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "quickstart.png"
    plot(fits, png)
    print(f"wrote {png}")
    return {"fits": fits, "png": png}


if __name__ == "__main__":
    main()
