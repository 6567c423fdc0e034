"""The generative function interface, call objects, and its two entry points inside programs.

A generative function is a distribution over choice maps together with a return value. Its
interface (the GFI) has three operations outside expectation programs and two inside them:

* ``simulate(key, *args) -> Trace``: draws every choice; ``score = log p(choices; args)``.
* ``assess(choices, *args) -> (log p(choices; args), retval)``: scores given choices.
* ``generate(key, constraints, *args) -> (Trace, log_weight)``: the constrained choices take
  the given values, the others are drawn from their prior (the internal proposal ``q``), and
  ``log_weight = score - log q(unconstrained choices)``: the sum of the log densities of the
  constrained choices (and of observed factors).
* ``simulate_in_program(*args) -> Trace`` (`pv.simulate`): inside an expectation program, draws
  every choice through `pv.sample` so that gradient strategies apply; the score is computed from
  the drawn values, hence differentiable in the arguments.
* ``density_in_program(choices, *args)`` (`pv.density`): inside an expectation program, the log
  density of given choices. For a function whose density is exact this is `assess`; a family
  whose density is itself estimated (a marginal, a normalized family) samples here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..adev.errors import ProgramError, SampleOutsideProgramError
from ..adev.handlers import active, handle
from .trace import Trace


class GenerativeFunction:
    """Base class of generative functions (`pv.gen` functions, combinators, NumPyro models).

    A subclass implements `simulate`, `assess`, `generate` and `simulate_in_program`, and
    overrides `density_in_program` when its density must be estimated by sampling. Inside
    `simulate_in_program` and `density_in_program` it draws with `pv.sample(address, dist)`
    using addresses relative to itself: the handlers of its caller add the caller's prefix
    (``"enc/z"``) and send the draw to the expectation program's strategies.

    Calling a generative function does not run it: ``encoder(x)`` is a `Call`, to be sampled at
    an address inside another generative function with ``pv.sample("enc", encoder(x))``.
    """

    @property
    def name(self) -> str:
        """The name used in error messages."""
        return type(self).__name__

    def __call__(self, *args) -> Call:
        return Call(self, args)

    def simulate(self, key, *args) -> Trace:
        """Draws every choice; returns the trace (choices, score = their log density, retval)."""
        raise self._missing("simulate")

    def assess(self, choices, *args) -> tuple[Any, Any]:
        """The log density of `choices` (which must give every choice) and the return value."""
        raise self._missing("assess")

    def generate(self, key, constraints, *args) -> tuple[Trace, Any]:
        """A trace that agrees with `constraints`, and its log importance weight."""
        raise self._missing("generate")

    def simulate_in_program(self, *args) -> Trace:
        """Inside an expectation program: draws every choice through `pv.sample`."""
        raise self._missing("simulate_in_program")

    def density_in_program(self, choices, *args) -> tuple[Any, Any]:
        """Inside an expectation program: the log density of `choices`; `assess` by default."""
        return self.assess(choices, *args)

    def elbo_in_program(self, model, obs, model_args, guide_args):
        """Inside `pv.elbo` with this function as the guide: its own ELBO value, or None.

        None (the default) asks for the generic estimate, ``log p(x, z) - log q(z)`` at one draw
        of `simulate_in_program`. A guide overrides it when it sums some of its choices out
        exactly, which only the ELBO allows (a NumPyro guide's enumerated sites in plates).
        """
        return None

    def _missing(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} does not implement {method}. A GenerativeFunction subclass "
            "implements simulate, assess, generate and simulate_in_program (and overrides "
            "density_in_program if its density is estimated)."
        )


@dataclasses.dataclass(frozen=True)
class Call:
    """A generative function applied to arguments, to be sampled at an address by its caller."""

    gen_fn: GenerativeFunction
    args: tuple

    def sample_in_program(self, address: str, send):
        """Sampled directly in an expectation program: its choices are sites under ``address/``.

        Returns the call's return value (use `pv.simulate` to get its whole trace).
        """
        from .handlers import Prefixed  # handlers import this module

        with handle(Prefixed(send, address)):
            return self.gen_fn.simulate_in_program(*self.args).retval


def _check(gen_fn, entry: str) -> None:
    if not isinstance(gen_fn, GenerativeFunction):
        raise TypeError(
            f"pv.{entry} needs a generative function (a @pv.gen function, pv.vmap, pv.scan or "
            f"a NumPyro model from pv.interop.numpyro), got {type(gen_fn).__name__}."
        )


def simulate(gen_fn: GenerativeFunction, *args: Any) -> Trace:
    """Inside an expectation program, draws the choices of `gen_fn` through the strategies.

    Each choice is a `pv.sample` site at its slash-joined address (``"z"``, ``"enc/z"``), so
    `pv.with_strategies` patterns name it as in the trace. The trace's score is the log density
    of the drawn values, differentiable in the arguments.

    Args:
      gen_fn: the generative function.
      *args: its arguments.

    Returns:
      A `Trace` of traced values.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def guide(m):
      ...     pv.sample("z", dist.Normal(m, 1.0))
      >>> @pv.expectation
      ... def neg_entropy(m):
      ...     return pv.simulate(guide, m).score
      >>> value = neg_entropy.estimate(jax.random.key(0), 0.5)
    """
    _check(gen_fn, "simulate")
    if not active():
        raise SampleOutsideProgramError(
            f"pv.simulate({gen_fn.name}, ...) was called outside an expectation program. "
            f"Call it inside a @pv.expectation, or call {gen_fn.name}.simulate(key, *args) "
            "for a plain draw."
        )
    from .handlers import Recorder  # handlers import this module

    if isinstance(active()[-1], Recorder):
        raise ProgramError(
            f"pv.simulate({gen_fn.name}, ...) was called inside the body of a @pv.gen function. "
            f"There, sample the call at an address: pv.sample('name', {gen_fn.name}(*args))."
        )
    return gen_fn.simulate_in_program(*args)


def density(gen_fn: GenerativeFunction, choices, *args) -> tuple[Any, Any]:
    """The log density of `choices` under `gen_fn` and its return value, without sampling.

    Inside an expectation program this is the program's density term (exact for `pv.gen`
    functions and combinators; families built by inference estimate it). Every choice must be
    given, and no other.

    Examples:
      >>> import numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def model():
      ...     return pv.sample("x", dist.Normal(0.0, 1.0))
      >>> logp, x = pv.density(model, {"x": 0.0})
      >>> print(f"{logp:.4f}")
      -0.9189
    """
    _check(gen_fn, "density")
    return gen_fn.density_in_program(choices, *args)
