"""K independent runs of a part of an expectation program: the particles of K-sample objectives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .errors import ProgramError
from .handlers import handle, independent


def particles(fn: Callable, num_particles: int, *args: Any) -> Any:
    """Runs ``fn(*args)`` `num_particles` times inside an expectation program, independently.

    Every random choice `fn` makes (directly, or through `pv.simulate` and `pv.density`) is
    drawn once per particle, each with its own key, as one batched site: its address is the
    same as in a single run, so `pv.with_strategies` patterns are unchanged. The outputs are
    stacked along a new leading axis. The runs go through `jax.vmap`, so only strategies that
    need no continuation (`pv.reparam`, `pv.reinforce`) can draw inside them.

    Args:
      fn: a function of `args` that may call `pv.sample`, `pv.simulate` and `pv.density`.
      num_particles: the number of runs K, a Python int of at least 1.
      *args: the arguments of every run (shared, not mapped).

    Returns:
      The outputs of the K runs, each leaf with a leading axis of size K.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def largest_of_three(mu):
      ...     xs = pv.particles(lambda: pv.sample("x", dist.Normal(mu, 1.0)), 3)
      ...     return jnp.max(xs)
      >>> keys = jax.random.split(jax.random.key(0), 20000)
      >>> values = jax.vmap(lambda k: largest_of_three.estimate(k, 0.0))(keys)
      >>> print(f"{values.mean():.2f}")  # E[max of 3 standard normals] = 3 / (2 sqrt(pi))
      0.85
    """
    if not callable(fn):
        raise ProgramError(
            f"pv.particles: fn is {type(fn).__name__}, not a function. The function of one "
            "particle comes first: pv.particles(lambda: pv.sample('z', d), 5)."
        )
    if not (isinstance(num_particles, int) and not isinstance(num_particles, bool)
            and num_particles >= 1):
        raise ProgramError(
            f"pv.particles: num_particles={num_particles!r}, but it must be a Python int of at "
            "least 1 (a shape fixed when the program is traced), e.g. pv.particles(fn, 5)."
        )
    count = num_particles

    def one(index):
        # Each site gets the particle's index as an operand: it is batched, so every particle
        # draws with its own key, even from a distribution that ignores `args`.
        with handle(independent(index)):
            return fn(*args)

    return jax.vmap(one)(jnp.arange(count))
