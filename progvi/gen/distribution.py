"""Distributions as generative functions: one choice, the value itself.

`pv.distribution(dist.Normal)` is a generative function whose arguments are the distribution's
constructor arguments and whose choices are its single value (a leaf, not a dict), as a
distribution is in Gen. It has the same interface as every generative function, so a
distribution can stand wherever one is expected; sampled in a `pv.gen` body at an address,
``pv.sample("x", normal(0.0, 1.0))`` is the same choice as
``pv.sample("x", dist.Normal(0.0, 1.0))``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from ..adev.foreign import as_distribution
from ..adev.handlers import sample
from .choices import check_finite, choice_value
from .generative_function import GenerativeFunction
from .trace import Trace

VALUE = "value"  # the address of the one choice when a distribution is simulated on its own


class DistributionFunction(GenerativeFunction):
    """A numpyro distribution family as a generative function; create one with `pv.distribution`."""

    def __init__(self, make: Callable):
        self.make = make

    @property
    def name(self) -> str:
        return getattr(self.make, "__name__", type(self.make).__name__)

    def dist(self, *args):
        """The distribution at `args` (another library's adapted, as at `pv.sample`)."""
        return as_distribution(self.make(*args), f"pv.distribution({self.name})")

    def _log_prob(self, d, value):
        return jnp.sum(d.log_prob(value))

    def simulate(self, key, *args) -> Trace:
        d = self.dist(*args)
        value = d.sample(key)
        return Trace(value, self._log_prob(d, value), value)

    def assess(self, choices, *args):
        d = self.dist(*args)
        value = choice_value(VALUE, d, choices)
        log_density = self._log_prob(d, value)
        check_finite(VALUE, log_density)
        return log_density, value

    def generate(self, key, constraints, *args):
        """With `constraints` None the value is drawn (weight 0), else it is the constraint."""
        if constraints is None:
            return self.simulate(key, *args), jnp.zeros(())
        log_density, value = self.assess(constraints, *args)
        return Trace(value, log_density, value), log_density

    def simulate_in_program(self, *args) -> Trace:
        # Simulated on its own in a program, the one choice is the site `value`.
        d = self.dist(*args)
        value = sample(VALUE, d)
        return Trace(value, self._log_prob(d, value), value)

    def __repr__(self):
        return f"<pv.distribution {self.name}>"


def distribution(make: Callable) -> DistributionFunction:
    """A generative function from a numpyro distribution constructor (or any function of the
    arguments that returns a distribution).

    Args:
      make: e.g. ``dist.Normal``, or ``lambda m: dist.Normal(m, 1.0)``.

    Returns:
      A `DistributionFunction`: `simulate`, `assess` and `generate` with the value as its choices.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> normal = pv.distribution(dist.Normal)
      >>> tr = normal.simulate(jax.random.key(0), 0.0, 1.0)
      >>> bool(tr.choices == tr.retval)
      True
      >>> logp, _ = normal.assess(0.0, 0.0, 1.0)
      >>> print(f"{logp:.4f}")
      -0.9189
      >>> @pv.gen
      ... def model():
      ...     return pv.sample("x", normal(0.0, 1.0))  # the same as dist.Normal(0.0, 1.0)
      >>> sorted(model.simulate(jax.random.key(1)).choices)
      ['x']
    """
    if isinstance(make, GenerativeFunction) or not callable(make):
        raise TypeError(
            "pv.distribution takes a distribution constructor such as dist.Normal (or a "
            f"function returning a distribution), got {type(make).__name__}."
        )
    return DistributionFunction(make)
