"""Traces: the record of one run of a generative function."""

from __future__ import annotations

from typing import Any, NamedTuple


class Trace(NamedTuple):
    """One run of a generative function; a pytree, so it crosses `jax.jit` and `jax.vmap`.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def coin():
      ...     return pv.sample("flip", dist.Bernoulli(0.25))
      >>> tr = coin.simulate(jax.random.key(0))
      >>> sorted(tr.choices), tr.retval is tr.choices["flip"]
      (['flip'], True)
    """

    choices: Any  # nested dict: address -> value, or address -> the choices of a nested call
    score: Any  # log density of the choices (of every choice, observed factors included)
    retval: Any  # what the function returned
