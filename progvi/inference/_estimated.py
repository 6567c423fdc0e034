"""What families with estimated densities share: particles, log-mean-exp, the missing assess."""

import jax
import jax.numpy as jnp

from ..adev.handlers import active, dispatch, handle
from ..adev.particles import particles
from ..gen.handlers import Prefixed


def simulate_particles(gen_fn, num: int, address: str, *args):
    """`num` traces of `gen_fn`, batched along axis 0; their sites are ``address/...``.

    Each particle draws independently (one batched site per choice); only strategies that need
    no continuation can draw here.
    """
    stack = active()
    with handle(Prefixed(lambda site: dispatch(stack, site), address)):
        return particles(gen_fn.simulate_in_program, num, *args)


def take(tree, index):
    """Entry `index` of every leaf of a batched pytree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def log_mean_exp(log_w):
    return jax.nn.logsumexp(log_w) - jnp.log(log_w.shape[0])


def no_exact_density(name: str) -> TypeError:
    """The error of `assess` and `generate` on a family whose density is only estimated."""
    return TypeError(
        f"{name} has no exact density, so assess and generate are not defined for it. Inside "
        "an expectation program use pv.density (an unbiased estimate); outside, use "
        "family.estimate_log_density(key, choices, *args)."
    )
