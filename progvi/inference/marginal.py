"""`pv.marginal`: a family with auxiliary variables, scored by importance sampling them.

The family is the marginal ``q(z) = ∫ q(z, u) du`` of a joint generative function over kept
choices ``z`` and auxiliary choices ``u``. Its density is estimated with a proposal
``r(u | z)`` and K particles, which is what hierarchical variational inference needs:

* ``pv.simulate`` draws ``(z, u_1) ~ q`` and ``u_2..u_K ~ r(· | z)`` and scores ``z`` with

  $$
      \\log \\hat q(z) = \\log \\frac{1}{K} \\sum_{k=1}^K \\frac{q(z, u_k)}{r(u_k \\mid z)},
  $$

  whose reciprocal is unbiased, $E[1 / \\hat q(z)] = 1 / q(z)$, so $E[\\log \\hat q(z)]
  \\ge \\log q(z)$ and an ELBO with this score is a lower bound. K = 1 is HVI (Ranganath et al.
  2016, with a reverse model as in Agakov & Barber 2004), K = M + 1 is IWHVI(M) (Sobolev & Vetrov
  2019); IWAE over such a family is DIWHVI.
* ``pv.density`` of given ``z`` draws ``u_1..u_K ~ r(· | z)``: the same formula is then an
  unbiased estimate of ``q(z)`` itself.

References:
  Ranganath, Tran & Blei, "Hierarchical Variational Models", ICML 2016.
  Sobolev & Vetrov, "Importance Weighted Hierarchical Variational Inference", NeurIPS 2019.
  Becker et al., "Probabilistic Programming with Programmable Variational Inference", PLDI 2024.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ..adev.keys import shown
from ..gen.choices import addresses_of, merge
from ..gen.errors import ChoiceError
from ..gen.generative_function import GenerativeFunction
from ..gen.trace import Trace
from ._estimated import log_mean_exp, no_exact_density, simulate_particles


class Marginal(GenerativeFunction):
    """The marginal over `keep` of `gen_fn`, scored by importance sampling; see `pv.marginal`."""

    def __init__(self, gen_fn, keep, proposal, num_particles: int):
        self.gen_fn, self.keep, self.proposal, self.K = gen_fn, tuple(keep), proposal, num_particles

    @property
    def name(self) -> str:
        return f"marginal({self.gen_fn.name})"

    def _split(self, choices):
        missing = [a for a in self.keep if a not in choices]
        if missing:
            raise ChoiceError(
                lambda a: f"{self.name} keeps {a!r}, but {self.gen_fn.name} samples no such "
                f"address (it samples {sorted(choices)}). Correct keep=.",
                missing[0],
            )
        kept = {a: v for a, v in choices.items() if a in self.keep}
        return kept, {a: v for a, v in choices.items() if a not in self.keep}

    def _check_kept(self, choices):
        extra = sorted(set(choices) - set(self.keep)) or sorted(set(self.keep) - set(choices))
        if extra:
            raise ChoiceError(
                lambda a: f"{self.name} has exactly the choices {sorted(self.keep)}; the choices "
                f"given differ at {a!r}. Give the kept choices only.",
                extra[0],
            )

    @contextlib.contextmanager
    def _proposal_checked(self, args):
        """Re-raises a `ChoiceError` of the block as the mismatch of proposal and auxiliaries.

        A proposal must sample exactly the joint's auxiliary choices; when it does not, the
        density that fails is the joint's or the proposal's, whose message blames the choices.
        """
        try:
            yield
        except ChoiceError as err:
            message = self._mismatch(args)
            if message is None:
                raise
            raise ChoiceError(lambda a: message, err.address) from None

    def _mismatch(self, args):
        in_joint = addresses_of(self.gen_fn, *args)
        if in_joint is None:
            return None
        kept = {a for a in in_joint if a.split("/")[0] in self.keep}
        try:
            example = jax.eval_shape(lambda: self.gen_fn.simulate(jax.random.key(0), *args))
        except Exception:  # noqa: BLE001  (only a better message is lost)
            return None
        example = {a: v for a, v in example.choices.items() if a in self.keep}
        in_proposal = addresses_of(self.proposal, example, *args)
        if in_proposal is None:
            return None
        aux = sorted(in_joint - kept)
        if set(aux) == in_proposal:
            return None
        wrong = sorted(in_proposal - set(aux)) or sorted(set(aux) - in_proposal)
        return (
            f"pv.marginal({self.gen_fn.name}, keep={list(self.keep)}, "
            f"proposal={self.proposal.name}): the proposal must sample exactly the auxiliary "
            f"choices of {self.gen_fn.name} (those not kept: {aux}), but it samples "
            f"{sorted(in_proposal)}, which differ at {wrong[0]!r}. Give the proposal those "
            "addresses (it is the reverse model r(u | z) of the auxiliaries u), or correct keep=."
        )

    def _log_weights(self, kept, aux, log_r, args):
        """log q(z, u_k) - log r(u_k | z) for a batch of auxiliary choices."""
        joint = jax.vmap(lambda u: self.gen_fn.density_in_program(merge(kept, u), *args)[0])(aux)
        return joint - log_r

    # Inside expectation programs.

    def simulate_in_program(self, *args) -> Trace:
        with self._proposal_checked(args):
            tr = self.gen_fn.simulate_in_program(*args)
            kept, aux = self._split(tr.choices)
            log_w = tr.score - self.proposal.density_in_program(aux, kept, *args)[0]
            if self.K > 1:
                parts = simulate_particles(self.proposal, self.K - 1, "proposal", kept, *args)
                others = self._log_weights(kept, parts.choices, parts.score, args)
                log_w = log_mean_exp(jnp.concatenate([log_w[None], others]))
            return Trace(kept, log_w, tr.retval)

    def density_in_program(self, choices, *args):
        with self._proposal_checked(args):
            self._check_kept(choices)
            parts = simulate_particles(self.proposal, self.K, "proposal", choices, *args)
            return log_mean_exp(self._log_weights(choices, parts.choices, parts.score, args)), None

    # Outside expectation programs.

    def simulate(self, key, *args) -> Trace:
        """Draws ``z`` with its auxiliaries; the score is the estimate ``log q̂(z)`` above."""
        with self._proposal_checked(args):
            k_joint, k_parts = jax.random.split(key)
            tr = self.gen_fn.simulate(k_joint, *args)
            kept, aux = self._split(tr.choices)
            log_w = tr.score - self.proposal.assess(aux, kept, *args)[0]
            if self.K > 1:
                keys = jax.random.split(k_parts, self.K - 1)
                parts = jax.vmap(lambda k: self.proposal.simulate(k, kept, *args))(keys)
                joint = jax.vmap(lambda u: self.gen_fn.assess(merge(kept, u), *args)[0])(
                    parts.choices)
                log_w = log_mean_exp(jnp.concatenate([log_w[None], joint - parts.score]))
            return Trace(kept, log_w, tr.retval)

    def estimate_log_density(self, key, choices, *args):
        """``log q̂(z)`` with K particles from the proposal: ``exp`` of it is unbiased for q(z)."""
        with self._proposal_checked(args):
            self._check_kept(choices)
            keys = jax.random.split(key, self.K)
            parts = jax.vmap(lambda k: self.proposal.simulate(k, choices, *args))(keys)
            joint = jax.vmap(lambda u: self.gen_fn.assess(merge(choices, u), *args)[0])(
                parts.choices)
            return log_mean_exp(joint - parts.score)

    def assess(self, choices, *args):
        raise no_exact_density(self.name)

    def generate(self, key, constraints, *args):
        raise no_exact_density(self.name)



def marginal(
    gen_fn: GenerativeFunction,
    keep: Sequence[str],
    proposal: GenerativeFunction,
    num_particles: int = 1,
) -> Marginal:
    """The marginal family of `gen_fn` over the addresses `keep`, its other choices auxiliary.

    Args:
      gen_fn: the joint family over kept and auxiliary choices.
      keep: the top-level addresses of the family's choices.
      proposal: a generative function of ``(kept_choices, *args)`` whose choices are exactly
        the auxiliary ones: the reverse model ``r(u | z)``.
      num_particles: K, the number of auxiliary particles per density estimate (K = 1: HVI;
        K = M + 1: IWHVI with M proposal samples).

    Returns:
      A `Marginal` generative function whose choices are the kept ones. Its `pv.simulate`
      score has an unbiased reciprocal, its `pv.density` is unbiased (see the module doc).

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def joint(m):
      ...     u = pv.sample("u", dist.Normal(m, 1.0))
      ...     pv.sample("z", dist.Normal(u, 1.0))
      >>> @pv.gen
      ... def reverse(kept, m):
      ...     pv.sample("u", dist.Normal((kept["z"] + m) / 2, 0.8))
      >>> family = pv.marginal(joint, keep=["z"], proposal=reverse, num_particles=4)
      >>> @pv.expectation
      ... def density_at_zero(m):
      ...     return jnp.exp(pv.density(family, {"z": 0.0}, m)[0])
      >>> keys = jax.random.split(jax.random.key(0), 20000)
      >>> q0 = jax.vmap(lambda k: density_at_zero.estimate(k, 0.0))(keys).mean()
      >>> print(f"{q0:.2f}")  # N(0; 0, sqrt 2) = 0.28
      0.28
    """
    for what, value in (("gen_fn", gen_fn), ("proposal", proposal)):
        if not isinstance(value, GenerativeFunction):
            raise TypeError(
                f"pv.marginal: {what} is {shown(value)}, not a generative function. "
                "Decorate it with @pv.gen (the proposal is a @pv.gen function of "
                "(kept_choices, *args))."
            )
    if not (isinstance(num_particles, int) and num_particles >= 1):
        raise ValueError(
            f"pv.marginal({gen_fn.name}, ...): num_particles={num_particles!r} must be an int "
            ">= 1 (1: HVI; M + 1: IWHVI with M proposal samples)."
        )
    if isinstance(keep, str):
        raise TypeError(f'pv.marginal: keep={keep!r} must be a list of addresses, e.g. ["{keep}"].')
    return Marginal(gen_fn, keep, proposal, num_particles)
