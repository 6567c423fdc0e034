"""`pv.normalize`: the sampling-importance-resampling family of a target and a proposal.

Given an unnormalized target ``p̃(z)`` (the density of a generative function at ``z`` merged
with fixed observations) and a proposal ``q(z)``, the family draws ``z_1..z_K ~ q``, weighs them
by ``w_k = p̃(z_k) / q(z_k)`` and returns ``z_j`` with ``j ~ Categorical(w)``. Its density is
estimated by

$$
    \\hat p(z_j) = \\frac{\\tilde p(z_j)}{\\frac{1}{K} \\sum_k w_k},
$$

* after ``pv.simulate``: from the K particles drawn, so $E[1 / \\hat p(z) \\mid z] =
  1 / q_{SIR}(z)$ (the reciprocal is unbiased, as an ELBO-style objective needs);
* by ``pv.density`` of a given ``z``: with ``z`` as one particle and K - 1 drawn from ``q``, an
  unbiased estimate of $q_{SIR}(z)$.

As K grows the family approaches the normalized target, which is how forward-KL and wake-sleep
objectives use it.

Rejuvenation (resample-move). With ``rejuvenate=kernel`` the resampled ``z_j`` is moved by an
MCMC kernel ``M`` that leaves the normalized target ``π = p̃ / Z`` invariant, ``z' ~ M(z_j, ·)``,
and scored with the same ``Ẑ = (1/K) Σ_k w_k``:

$$ \\hat p(z') = \\frac{\\tilde p(z')}{\\hat Z}. $$

Why this stays valid: write ``L(z_j | z') = π(z_j) M(z_j, z') / π(z')`` for the kernel's
reversal. The draw ``(z_{1:K}, j, z')`` has density ``Q = Π_k q(z_k) · (w_j / Σ_k w_k) ·
M(z_j, z')``; the conditional ``R(z_{1:K}, j | z') = L(z_j | z') / K · Π_{k≠j} q(z_k)`` is
normalized, and ``Q / R = p̃(z') / Ẑ``. Hence, for ``q_RSIR`` the marginal of ``z'``:

* after ``pv.simulate``, ``E[1 / \\hat p(z') | z'] = 1 / q_RSIR(z')`` (ELBO-style objectives
  stay bounds; the family's ELBO is ``E[log Ẑ]``, the same as without the move), and for every
  ``h``, ``E[Ẑ h(z')] = Z E_π[h]``; ``Ẑ`` itself is untouched, unbiased for ``Z``;
* ``pv.density`` of a given ``z'`` draws ``z_j ~ L(· | z')`` and K - 1 particles from ``q``:
  an unbiased estimate of ``q_RSIR(z')``. It runs the kernel itself from ``z'``, so it needs
  ``L = M``: a kernel reversible with respect to ``π`` (MALA, HMC and NUTS with fixed settings,
  and repetitions of one of them, are).

What rejuvenation improves is the draw: ``KL(q_RSIR ‖ π) ≤ KL(q_SIR ‖ π)``, so the forward KL
through the family (`pv.forward_kl`) is estimated from draws closer to the posterior. The moved
draw is a constant for differentiation (an accept/reject step has no useful path derivative):
the family is for objectives that hold it fixed (`pv.forward_kl`, wake-q) or use it through
its score, whose gradient (through ``Ẑ``'s particles) is unchanged. The kernel needs the
target's exact density (`assess`) and real-valued choices on all of R^d (constrained choices
belong in unconstrained coordinates).

References:
  Rubin, "Using the SIR algorithm to simulate posterior distributions", Bayesian Statistics 3,
  1988.
  Gilks & Berzuini, "Following a moving target: Monte Carlo inference for dynamic Bayesian
  models", JRSS B 2001 (resample-move).
  Becker et al., "Probabilistic Programming with Programmable Variational Inference", PLDI 2024.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as nd

from ..adev.handlers import sample
from ..adev.keys import shown
from ..gen.choices import addresses_of, merge, paths
from ..gen.errors import ChoiceError
from ..gen.generative_function import GenerativeFunction
from ..gen.trace import Trace
from ._estimated import log_mean_exp, no_exact_density, simulate_particles, take
from ._moves import check_kernel, draw_key, move


class Normalize(GenerativeFunction):
    """Sampling-importance-resampling of `target` with `proposal`; see `pv.normalize`."""

    def __init__(self, target, proposal, num_particles, target_args, observations,
                 rejuvenate=None):
        self.target, self.proposal, self.K = target, proposal, num_particles
        self.target_args, self.observations = tuple(target_args), dict(observations or {})
        self.rejuvenate = rejuvenate

    @property
    def name(self) -> str:
        return f"normalize({self.target.name}, {self.proposal.name})"

    def _log_target(self, choices, density):
        try:
            return density(merge(choices, self.observations), *self.target_args)[0]
        except ChoiceError as err:
            message = self._mismatch(choices)
            if message is None:
                raise
            raise ChoiceError(lambda a: message, err.address) from None

    def _mismatch(self, choices):
        """Why the proposal's choices and the observations do not fit the target, if they don't."""
        in_target = addresses_of(self.target, *self.target_args)
        if in_target is None:
            return None
        proposed = {a for a, _ in paths(choices)}
        observed = {a for a, _ in paths(self.observations)}
        head = f"pv.normalize({self.target.name}, {self.proposal.name}, ...)"
        if unknown := sorted(observed - in_target):
            return (f"{head}: observations gives a value at {unknown[0]!r}, but "
                    f"{self.target.name} samples no such address (it samples "
                    f"{sorted(in_target)}). Correct the spelling, or remove it.")
        if both := sorted(observed & proposed):
            return (f"{head}: observations gives a value at {both[0]!r}, which the proposal "
                    f"{self.proposal.name} also samples. Remove it from one of them.")
        if extra := sorted(proposed - in_target):
            return (f"{head}: the proposal {self.proposal.name} samples {extra[0]!r}, but "
                    f"{self.target.name} samples no such address (it samples "
                    f"{sorted(in_target)}). The proposal's choices must be the target's latent "
                    "choices: rename or remove it.")
        if unset := sorted(in_target - proposed - observed):
            return (f"{head}: {self.target.name} samples {unset[0]!r}, but neither the "
                    f"observations (which give {sorted(observed)}) nor the proposal "
                    f"{self.proposal.name} (which samples {sorted(proposed)}) gives it a value. "
                    "Add it to observations if it is observed, or sample it in the proposal.")
        return None

    def _move(self, key, choices):
        """`choices` after the rejuvenation kernel's transitions, targeting the posterior."""
        target_args = jax.lax.stop_gradient(self.target_args)
        observations = jax.lax.stop_gradient(self.observations)

        def log_density(z):
            return self.target.assess(merge(z, observations), *target_args)[0]

        return move(self.rejuvenate, key, log_density, choices)

    # Inside expectation programs.

    def simulate_in_program(self, *args) -> Trace:
        parts = simulate_particles(self.proposal, self.K, "particles", *args)
        log_p = jax.vmap(lambda z: self._log_target(z, self.target.density_in_program))(
            parts.choices
        )
        log_w = log_p - parts.score
        index = sample("index", nd.Categorical(logits=log_w))
        if self.rejuvenate is None:
            return Trace(take(parts.choices, index), log_p[index] - log_mean_exp(log_w), None)
        # Resample-move: the score is the target at the moved draw over the same Ẑ.
        moved = self._move(draw_key("rejuvenate"), take(parts.choices, index))
        log_p_moved = self._log_target(moved, self.target.density_in_program)
        return Trace(moved, log_p_moved - log_mean_exp(log_w), None)

    def density_in_program(self, choices, *args):
        log_p = self._log_target(choices, self.target.density_in_program)
        if self.rejuvenate is None:
            log_w = log_p - self.proposal.density_in_program(choices, *args)[0]
        else:
            # The particle the move came from, drawn by the reverse kernel: for a reversible
            # kernel, the kernel itself.
            start = self._move(draw_key("rejuvenate"), choices)
            log_w = (self._log_target(start, self.target.density_in_program)
                     - self.proposal.density_in_program(start, *args)[0])
        if self.K > 1:
            parts = simulate_particles(self.proposal, self.K - 1, "particles", *args)
            others = jax.vmap(lambda z: self._log_target(z, self.target.density_in_program))(
                parts.choices
            )
            log_w = jnp.concatenate([log_w[None], others - parts.score])
        return log_p - log_mean_exp(jnp.atleast_1d(log_w)), None

    # Outside expectation programs.

    def simulate(self, key, *args) -> Trace:
        """Draws by sampling-importance-resampling; the score is ``log p̂(z)`` above."""
        k_parts, k_index = jax.random.split(key)
        parts = jax.vmap(lambda k: self.proposal.simulate(k, *args))(
            jax.random.split(k_parts, self.K)
        )
        log_p = jax.vmap(lambda z: self._log_target(z, self.target.assess))(parts.choices)
        log_w = log_p - parts.score
        index = jax.random.categorical(k_index, log_w)
        if self.rejuvenate is None:
            return Trace(take(parts.choices, index), log_p[index] - log_mean_exp(log_w), None)
        moved = self._move(jax.random.fold_in(k_index, 1), take(parts.choices, index))
        return Trace(moved, self._log_target(moved, self.target.assess) - log_mean_exp(log_w),
                     None)

    def estimate_log_density(self, key, choices, *args):
        """``log p̂(z)`` with z and K - 1 proposal particles: ``exp`` of it is unbiased."""
        log_p = self._log_target(choices, self.target.assess)
        if self.rejuvenate is None:
            log_w = log_p - self.proposal.assess(choices, *args)[0]
        else:
            key, k_move = jax.random.split(key)
            start = self._move(k_move, choices)
            log_w = (self._log_target(start, self.target.assess)
                     - self.proposal.assess(start, *args)[0])
        keys = jax.random.split(key, self.K - 1)
        parts = jax.vmap(lambda k: self.proposal.simulate(k, *args))(keys)
        others = jax.vmap(lambda z: self._log_target(z, self.target.assess))(parts.choices)
        return log_p - log_mean_exp(jnp.concatenate([log_w[None], others - parts.score]))

    def assess(self, choices, *args):
        raise no_exact_density(self.name)

    def generate(self, key, constraints, *args):
        raise no_exact_density(self.name)



def normalize(
    target: GenerativeFunction,
    proposal: GenerativeFunction,
    num_particles: int,
    target_args: tuple = (),
    observations: Mapping | None = None,
    *,
    rejuvenate: Any = None,
) -> Normalize:
    """The family that samples ``target`` (normalized) by importance resampling `proposal`.

    Args:
      target: the unnormalized target, e.g. the model; its density is taken at the proposal's
        choices merged with `observations`.
      proposal: a generative function whose choices are the target's latent choices; the
        family's arguments are the proposal's.
      num_particles: K >= 1, the number of proposal particles.
      target_args: the target's arguments.
      observations: choices of the target that are fixed (the data).
      rejuvenate: an MCMC kernel (an object with ``move(key, log_density, position) ->
        (position, acceptance_rate)``, e.g. ``pv.interop.blackjax.mala(0.1, num_steps=10)``)
        applied to the resampled draw, targeting the posterior; None: plain SIR. It must leave
        the posterior invariant, and be reversible for `pv.density` (module doc). Inside a
        program its key is drawn at the site ``rejuvenate``.

    Returns:
      A `Normalize` generative function (see the module doc for its density estimates). Inside
      a program its particles are sites ``particles/...`` and the resampled index a site
      ``index``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     z = pv.sample("z", dist.Normal(0.0, 1.0))
      ...     pv.sample("x", dist.Normal(z, 1.0))
      >>> @pv.gen
      ... def wide():
      ...     pv.sample("z", dist.Normal(0.0, 2.0))
      >>> sir = pv.normalize(model, wide, num_particles=50, observations={"x": 2.0})
      >>> keys = jax.random.split(jax.random.key(0), 2000)
      >>> zs = jax.vmap(lambda k: sir.simulate(k).choices["z"])(keys)
      >>> print(f"{zs.mean():.1f}")  # the posterior mean is 1
      1.0
    """
    for what, value in (("target", target), ("proposal", proposal)):
        if not isinstance(value, GenerativeFunction):
            raise TypeError(
                f"pv.normalize: {what} is {shown(value)}, not a generative function. "
                "Decorate it with @pv.gen."
            )
    if not isinstance(target_args, tuple):
        raise TypeError(
            f"pv.normalize: target_args is a {type(target_args).__name__}, but it must be the "
            "tuple of the target's arguments: target_args=(value,) for one."
        )
    if observations is not None and not isinstance(observations, Mapping):
        raise TypeError(
            f"pv.normalize: observations is a {type(observations).__name__}, but it must be a "
            'choice map of the target\'s observed addresses, e.g. observations={"x": x}.'
        )
    if not (isinstance(num_particles, int) and num_particles >= 1):
        raise ValueError(
            f"pv.normalize({target.name}, {proposal.name}, ...): num_particles={num_particles!r} "
            "must be an int >= 1."
        )
    check_kernel(f"pv.normalize({target.name}, {proposal.name}, ...)", rejuvenate)
    return Normalize(target, proposal, num_particles, target_args, observations, rejuvenate)
