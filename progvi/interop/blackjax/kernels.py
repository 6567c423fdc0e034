"""BlackJAX transition kernels as values: MALA, HMC and NUTS with fixed settings.

A `Kernel` holds a BlackJAX algorithm's settings and no density: `Kernel.move(key, log_density,
position)` builds the algorithm for `log_density` and runs ``num_steps`` transitions from
`position` (an array or a pytree such as a choice map). With fixed settings each transition
leaves the distribution with density proportional to ``exp(log_density)`` invariant and is
reversible with respect to it (detailed balance), which is what `pv.normalize`'s rejuvenation
and `sample_energy` rely on. Nothing is adapted during a move: adapting a step size to the
chain's own path would break both properties.

References:
  Roberts & Tweedie, "Exponential convergence of Langevin distributions and their discrete
  approximations", Bernoulli 1996 (MALA).
  Neal, "MCMC using Hamiltonian dynamics", Handbook of Markov Chain Monte Carlo, 2011 (HMC).
  Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 2014 (NUTS).
  Cabezas, Corenflos, Lao & Louf, "BlackJAX: Composable Bayesian inference in JAX", 2024.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._require import blackjax


@dataclasses.dataclass(frozen=True)
class Kernel:
    """``num_steps`` transitions of one BlackJAX algorithm; build one with `mala`, `hmc`, `nuts`.

    `algorithm` is the BlackJAX factory's name, `settings` its keyword arguments other than the
    log density (and the inverse mass matrix, `inverse_mass_matrix`, whose default is the
    identity of the position's size).
    """

    algorithm: str
    settings: tuple
    num_steps: int
    inverse_mass_matrix: Any = None

    @property
    def name(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.settings)
        return f"pv.interop.blackjax.{self.algorithm}({shown}, num_steps={self.num_steps})"

    def build(self, log_density: Callable):
        """The BlackJAX `SamplingAlgorithm` of this kernel for `log_density`."""
        factory = getattr(blackjax(self.algorithm), self.algorithm)
        return factory(log_density, **dict(self.settings))

    def _algorithm(self, log_density, position):
        if self.algorithm == "mala":
            return self.build(log_density)
        size = ravel_pytree(position)[0].shape[0]
        matrix = self.inverse_mass_matrix
        matrix = jnp.ones(size) if matrix is None else jnp.asarray(matrix)
        if matrix.shape[0] != size:
            raise ValueError(
                f"{self.name}: inverse_mass_matrix has shape {matrix.shape}, but the position "
                f"has {size} entries in all (flattened). Give a vector of {size} (diagonal) or "
                f"a ({size}, {size}) matrix."
            )
        factory = getattr(blackjax(self.algorithm), self.algorithm)
        return factory(log_density, inverse_mass_matrix=matrix, **dict(self.settings))

    def move(self, key: jax.Array, log_density: Callable, position: Any) -> tuple[Any, jax.Array]:
        """Runs the kernel's transitions from `position`: ``(new position, mean acceptance)``.

        Args:
          key: a `jax.random` key.
          log_density: the log density to target, up to a constant, of a position.
          position: an array or pytree of floating arrays: the chain's start.

        Returns:
          The position after ``num_steps`` transitions and the mean of the transitions'
          acceptance rates (for NUTS, its average acceptance statistic).
        """
        check_position(self.name, position)
        algorithm = self._algorithm(log_density, position)

        def step(state, k):
            state, info = algorithm.step(k, state)
            return state, info.acceptance_rate

        state, rates = jax.lax.scan(
            step, algorithm.init(position), jax.random.split(key, self.num_steps))
        return state.position, rates.mean()


def check_position(name: str, position) -> None:
    """Raises a TypeError unless every leaf of `position` is a floating array."""
    leaves = jax.tree_util.tree_leaves_with_path(position)
    if not leaves:
        raise TypeError(f"{name}: the position is empty; give the chain's start (an array).")
    for path, leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            where = jax.tree_util.keystr(path) or "the position"
            raise TypeError(
                f"{name}: {where} has dtype {jnp.result_type(leaf)}, but gradient-based MCMC "
                "moves only real-valued (floating) choices. Marginalize or fix discrete "
                "choices, or move them with a kernel of your own."
            )


def _check(name: str, num_steps: int, **positive: float) -> None:
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"pv.interop.blackjax.{name}: num_steps={num_steps!r} must be an int "
                         ">= 1.")
    for arg, value in positive.items():
        if isinstance(value, int | float) and not value > 0:  # traced values pass unchecked
            raise ValueError(f"pv.interop.blackjax.{name}: {arg}={value!r} must be positive.")


def mala(step_size: float, num_steps: int = 1) -> Kernel:
    """``num_steps`` transitions of the Metropolis-adjusted Langevin algorithm (BlackJAX MALA).

    Each proposes ``x' = x + ε ∇log π(x) + sqrt(2ε) ξ`` (``ε`` the step size, ``ξ`` standard
    normal) and accepts it with the Metropolis-Hastings probability.

    Args:
      step_size: ε, positive.
      num_steps: transitions per move, an int >= 1.

    Returns:
      A `Kernel`.

    Examples:
      >>> import jax, jax.numpy as jnp, progvi as pv
      >>> kernel = pv.interop.blackjax.mala(0.5, num_steps=200)
      >>> x, rate = kernel.move(jax.random.key(0), lambda x: -0.5 * x @ x, jnp.full(2, 3.0))
      >>> bool(jnp.all(jnp.abs(x) < 5.0)), bool(0.0 < rate < 1.0)
      (True, True)
    """
    _check("mala", num_steps, step_size=step_size)
    return Kernel("mala", (("step_size", step_size),), num_steps)


def hmc(step_size: float, num_integration_steps: int, num_steps: int = 1,
        inverse_mass_matrix: Any = None) -> Kernel:
    """``num_steps`` transitions of Hamiltonian Monte Carlo (BlackJAX HMC, leapfrog).

    Args:
      step_size: the leapfrog step size, positive.
      num_integration_steps: leapfrog steps per transition, an int >= 1.
      num_steps: transitions per move, an int >= 1.
      inverse_mass_matrix: a vector (diagonal) or matrix over the flattened position; default
        the identity.

    Returns:
      A `Kernel`.

    Examples:
      >>> import jax, jax.numpy as jnp, progvi as pv
      >>> kernel = pv.interop.blackjax.hmc(0.3, num_integration_steps=5, num_steps=20)
      >>> x, rate = kernel.move(jax.random.key(0), lambda x: -0.5 * x @ x, jnp.full(2, 3.0))
      >>> bool(jnp.all(jnp.abs(x) < 5.0)), bool(0.0 < rate <= 1.0)
      (True, True)
    """
    _check("hmc", num_steps, step_size=step_size, num_integration_steps=num_integration_steps)
    return Kernel("hmc", (("step_size", step_size),
                          ("num_integration_steps", int(num_integration_steps))),
                  num_steps, inverse_mass_matrix)


def nuts(step_size: float, num_steps: int = 1, inverse_mass_matrix: Any = None,
         max_num_doublings: int = 10) -> Kernel:
    """``num_steps`` transitions of the No-U-Turn sampler (BlackJAX NUTS, multinomial).

    Args:
      step_size: the leapfrog step size, positive (fixed: see `nuts_reference` for adaptation).
      num_steps: transitions per move, an int >= 1.
      inverse_mass_matrix: a vector (diagonal) or matrix over the flattened position; default
        the identity.
      max_num_doublings: the largest tree depth.

    Returns:
      A `Kernel`.

    Examples:
      >>> import jax, jax.numpy as jnp, progvi as pv
      >>> kernel = pv.interop.blackjax.nuts(0.5, num_steps=20)
      >>> x, rate = kernel.move(jax.random.key(0), lambda x: -0.5 * x @ x, jnp.full(2, 3.0))
      >>> bool(jnp.all(jnp.abs(x) < 5.0)), bool(0.0 < rate <= 1.0)
      (True, True)
    """
    _check("nuts", num_steps, step_size=step_size)
    return Kernel("nuts", (("step_size", step_size),
                           ("max_num_doublings", int(max_num_doublings))),
                  num_steps, inverse_mass_matrix)
