"""Reference posteriors by NUTS with window adaptation, for checking variational fits.

References:
  Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 2014 (NUTS, dual-averaging step size).
  Stan Development Team, Stan Reference Manual, "HMC algorithm parameters" (the windowed
  adaptation of the step size and the diagonal mass matrix that BlackJAX's
  `window_adaptation` follows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._require import blackjax
from .kernels import check_position


class NutsReference(NamedTuple):
    """Draws of NUTS chains and their diagnostics; `summary` gives means and errors."""

    samples: Any  # the position pytree, each leaf (num_chains, num_samples, *shape)
    acceptance_rate: jax.Array  # (num_chains,): mean acceptance statistic after warm-up
    num_divergent: jax.Array  # (num_chains,): divergent transitions after warm-up
    step_size: jax.Array  # (num_chains,): each chain's adapted step size

    def summary(self) -> dict:
        """Per leaf: posterior ``mean``, ``sd``, Monte Carlo standard error ``mcse`` of the
        mean (sd / sqrt(ESS)), ``ess`` and split ``rhat``, over all chains."""
        diagnostics = blackjax("nuts_reference").diagnostics

        def one(x):
            mean, sd = x.mean((0, 1)), x.std((0, 1))
            ess = diagnostics.effective_sample_size(x, chain_axis=0, sample_axis=1)
            rhat = diagnostics.potential_scale_reduction(x, chain_axis=0, sample_axis=1)
            return {"mean": mean, "sd": sd, "mcse": sd / jnp.sqrt(ess), "ess": ess,
                    "rhat": rhat}

        return jax.tree.map(one, self.samples)


def nuts_reference(
    key: jax.Array, log_density: Callable[[Any], jax.Array], init: Any, num_samples: int, *,
    num_warmup: int = 500, num_chains: int = 4, target_acceptance_rate: float = 0.8,
) -> NutsReference:
    r"""Draws from $p(z) \propto \exp(\text{log\_density}(z))$ by NUTS, adapted per chain.

    Each chain starts at `init`, runs BlackJAX's `window_adaptation` (dual averaging of the
    step size towards `target_acceptance_rate`, a diagonal inverse mass matrix from the
    warm-up's windows) for `num_warmup` steps, then keeps `num_samples` NUTS draws with the
    adapted settings, which are then fixed. Chains run under `jax.vmap`, each with its own key;
    with two chains or more `summary()` reports split R-hat. The density must be of
    unconstrained coordinates (transform constrained ones, with their log-Jacobian).

    Args:
      key: a `jax.random` key.
      log_density: the log density up to a constant, a function of one position (an array or
        a pytree such as a choice map).
      init: the position every chain starts from.
      num_samples: draws kept per chain.
      num_warmup: adaptation steps per chain, discarded.
      num_chains: independent chains.
      target_acceptance_rate: the step-size adaptation's target.

    Returns:
      `NutsReference`: the draws (leaves ``(num_chains, num_samples, ...)``) and diagnostics.

    Examples:
      >>> import jax, jax.numpy as jnp, progvi as pv
      >>> ref = pv.interop.blackjax.nuts_reference(
      ...     jax.random.key(0), lambda z: -0.5 * jnp.sum((z - 2.0) ** 2), jnp.zeros(2),
      ...     num_samples=300, num_warmup=200, num_chains=2)
      >>> ref.samples.shape
      (2, 300, 2)
      >>> s = ref.summary()
      >>> bool(jnp.all(jnp.abs(s["mean"] - 2.0) < 5 * s["mcse"]))
      True
    """
    for name, value in (("num_samples", num_samples), ("num_warmup", num_warmup),
                        ("num_chains", num_chains)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"nuts_reference: {name}={value!r} must be an int >= 1.")
    check_position("nuts_reference", init)
    bj = blackjax("nuts_reference")

    def chain(k):
        k_warm, k_draw = jax.random.split(k)
        warmup = bj.window_adaptation(bj.nuts, log_density,
                                      target_acceptance_rate=target_acceptance_rate)
        (state, parameters), _ = warmup.run(k_warm, init, num_steps=num_warmup)
        nuts = bj.nuts(log_density, **parameters)

        def step(state, k_step):
            state, info = nuts.step(k_step, state)
            return state, (state.position, info.acceptance_rate, info.is_divergent)

        _, (draws, rates, divergent) = jax.lax.scan(
            step, state, jax.random.split(k_draw, num_samples))
        return draws, rates.mean(), divergent.sum(), parameters["step_size"]

    draws, rates, divergent, step_size = jax.vmap(chain)(jax.random.split(key, num_chains))
    return NutsReference(draws, rates, divergent, step_size)
