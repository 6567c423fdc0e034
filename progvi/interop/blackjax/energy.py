"""Sampling an energy model ``p(x) ∝ f(x)`` by MCMC chains (Langevin / MALA, HMC, NUTS)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .kernels import Kernel


class EnergySamples(NamedTuple):
    """The chains' final positions and acceptance rates."""

    positions: jax.Array  # (num_chains, *event): each chain's last position
    acceptance_rate: jax.Array  # (num_chains,): each chain's mean acceptance rate


def sample_energy(
    key: jax.Array, log_f: Callable[..., jax.Array], init: jax.Array, *, kernel: Kernel,
    model_args: tuple = (),
) -> EnergySamples:
    r"""Runs one MCMC chain per row of `init` on the unnormalized density ``f``.

    ``log_f`` has the convention of `pv.unnormalized.nll`: a function of a batch of points
    (shape ``(n, *event)``) and `model_args`, returning shape ``(n,)``. Each chain targets
    $p(x) = f(x) / Z$, which needs no $Z$: MALA (`pv.interop.blackjax.mala`) is Langevin
    dynamics $x' = x + \epsilon \nabla \log f(x) + \sqrt{2 \epsilon}\, \xi$ corrected by a
    Metropolis-Hastings test, so its chains have $p$ as their stationary law. The chains run
    under `jax.vmap`, each with its own key; ``kernel.num_steps`` transitions each.

    Args:
      key: a `jax.random` key.
      log_f: ``log_f(x, *model_args) -> (n,)``, the log of the unnormalized density.
      init: the chains' starts, shape ``(num_chains, *event)``.
      kernel: the transition kernel with its settings and number of steps, e.g.
        ``pv.interop.blackjax.mala(0.05, num_steps=1000)``.
      model_args: further arguments of `log_f` (the model's parameters).

    Returns:
      `EnergySamples`: the last position of each chain and its acceptance rate.

    Examples:
      >>> import jax, jax.numpy as jnp, progvi as pv
      >>> def log_f(x, mu):  # a Gaussian energy, N(mu, I) unnormalized
      ...     return -0.5 * jnp.sum((x - mu) ** 2, axis=-1)
      >>> out = pv.interop.blackjax.sample_energy(
      ...     jax.random.key(0), log_f, jnp.zeros((2000, 2)),
      ...     kernel=pv.interop.blackjax.mala(0.5, num_steps=100), model_args=(3.0,))
      >>> print(f"{out.positions.mean():.1f}")
      3.0
    """
    if not isinstance(kernel, Kernel) and not callable(getattr(kernel, "move", None)):
        raise TypeError(
            f"sample_energy: kernel={kernel!r} is not an MCMC kernel. Pass one such as "
            "kernel=pv.interop.blackjax.mala(0.05, num_steps=1000)."
        )
    init = jnp.asarray(init)
    if init.ndim < 1 or not jnp.issubdtype(init.dtype, jnp.floating):
        raise TypeError(
            f"sample_energy: init has shape {init.shape} and dtype {init.dtype}; give the "
            "chains' starts as a floating array of shape (num_chains, *event)."
        )
    probe = jax.eval_shape(lambda x: log_f(x, *model_args), init[:1])
    if probe.shape != (1,):
        raise ValueError(
            f"sample_energy: log_f of a batch of 1 point (shape {init[:1].shape}) returned "
            f"shape {probe.shape}; it must return one log density per point, shape (1,). "
            "log_f takes a batch (n, *event) and returns (n,), as in pv.unnormalized.nll."
        )

    def log_density(x):
        return log_f(x[None], *model_args)[0]

    def chain(k, x0):
        return kernel.move(k, log_density, x0)

    positions, rates = jax.vmap(chain)(jax.random.split(key, init.shape[0]), init)
    return EnergySamples(positions, rates)
