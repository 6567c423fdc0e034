"""The smallest end-to-end progvi program: fit a Gaussian guide by maximizing an ELBO.

Model: z ~ N(0, 1), x | z ~ N(z, 1), observed x = 3. The exact posterior is N(1.5, 1/2).
The guide N(m, exp(log_s)) is fitted by stochastic gradient ascent on the reparameterized ELBO,
then again with leave-one-out REINFORCE over 8 draws, chosen from outside the program with
`pv.with_strategies`.
"""

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


def main(steps=2000):
    print(f"{'strategy':<10} {'mean':>8} {'std':>8}   (exact posterior: mean 1.5000, std 0.7071)")
    for name, objective in [
        ("reparam", elbo),
        ("loo-8", pv.with_strategies(elbo, {"z": pv.leave_one_out(num_samples=8)})),
    ]:
        phi, _ = fit(objective, jax.random.key(0), steps=steps)
        print(f"{name:<10} {float(phi['m']):>8.4f} {float(jnp.exp(phi['log_s'])):>8.4f}")


if __name__ == "__main__":
    main()
