"""What rejuvenating a resampled particle needs: a key drawn inside a program, the move itself.

An MCMC move consumes randomness of its own. Inside an expectation program the only source of
randomness is a sample site, so the move's key is drawn at a site (`draw_key`) from `KeyBits`, a
distribution with no parameters whose value is the raw data of a fresh key: its log density is
constant, so the site contributes no gradient term under any strategy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from ..adev.handlers import sample
from ..adev.reinforce import reinforce

_KEY_DATA = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))


class KeyBits(nd.Distribution):
    """The raw data of a fresh `jax.random` key (uniform bits); constant log density."""

    def __init__(self):
        super().__init__(batch_shape=(), event_shape=_KEY_DATA.shape)

    def sample(self, key, sample_shape=()):
        keys = jax.random.split(key, sample_shape) if sample_shape else key
        return jax.random.key_data(keys)

    def log_prob(self, value):
        return jnp.zeros(jnp.shape(value)[: jnp.ndim(value) - len(_KEY_DATA.shape)])

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux_data, params):
        return cls()


def draw_key(address: str):
    """A `jax.random` key drawn at the site `address` of the running program."""
    return jax.random.wrap_key_data(sample(address, KeyBits(), strategy=reinforce))


def check_kernel(name: str, rejuvenate) -> None:
    """Raises a TypeError unless `rejuvenate` has the kernel interface ``move(key, f, x)``."""
    if rejuvenate is not None and not callable(getattr(rejuvenate, "move", None)):
        raise TypeError(
            f"{name}: rejuvenate={rejuvenate!r} is not an MCMC kernel. Pass one with a method "
            "move(key, log_density, position) -> (position, acceptance_rate), e.g. "
            "rejuvenate=pv.interop.blackjax.mala(0.1, num_steps=10)."
        )


def move(rejuvenate, key, log_density, choices):
    """The choices after `rejuvenate`'s transitions, held constant (a move has no gradient)."""
    moved, _ = rejuvenate.move(key, log_density, jax.lax.stop_gradient(choices))
    return jax.lax.stop_gradient(moved)
