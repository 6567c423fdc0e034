"""`@pv.gen`: generative functions written as Python functions that call `pv.sample`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from ..adev.handlers import handle
from ..adev.keys import check_key
from .generative_function import GenerativeFunction
from .handlers import Assessing, Generating, Simulating, SimulatingInProgram
from .trace import Trace


class GenFunction(GenerativeFunction):
    """A generative function whose body is a Python function; create one with `pv.gen`.

    Its choices are the `pv.sample` calls of the body, in a dict keyed by address; a call of
    another generative function sampled at an address contributes its choices as a nested dict.
    The body may use any JAX code between sample sites; repeated random structure goes through
    `pv.vmap` and `pv.scan` (a `pv.sample` inside `lax.scan`, `lax.cond`, `jax.vmap` or
    `jax.jit` in the body is an error that says so, since its choice would leak out as a
    tracer).
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        return getattr(self, "__name__", type(self.fn).__name__)

    def _run(self, handler, args):
        self._check_arity(args)
        with handle(handler):
            return self.fn(*args)

    def _check_arity(self, args):
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # no signature (a builtin): the call itself complains
            return
        try:
            signature.bind(*args)
        except TypeError as err:
            raise TypeError(
                f"generative function {self.name}{signature} was run with {len(args)} "
                f"argument(s) ({err}). Pass its own arguments: {self.name}.simulate(key, *args), "
                f"pv.simulate({self.name}, *args), pv.sample('name', {self.name}(*args)), or in "
                "an objective model_args=(...) / guide_args=(...)."
            ) from None

    def simulate(self, key, *args) -> Trace:
        """Draws every choice.

        Examples:
          >>> import jax, numpyro.distributions as dist, progvi as pv
          >>> @pv.gen
          ... def model(mu0):
          ...     z = pv.sample("z", dist.Normal(mu0, 1.0))
          ...     return pv.sample("x", dist.Normal(z, 1.0))
          >>> tr = model.simulate(jax.random.key(0), 0.0)
          >>> sorted(tr.choices)
          ['x', 'z']
        """
        check_key(key, f"{self.name}.simulate(key, *args)",
                  f"{self.name}.simulate(jax.random.key(0), *args)")
        handler = Simulating(self.name, key)
        retval = self._run(handler, args)
        return Trace(handler.choices, handler.total(), retval)

    def assess(self, choices, *args):
        """The log density of `choices` (every choice, no other) and the return value.

        Examples:
          >>> import numpyro.distributions as dist, progvi as pv
          >>> @pv.gen
          ... def model(mu0):
          ...     z = pv.sample("z", dist.Normal(mu0, 1.0))
          ...     return pv.sample("x", dist.Normal(z, 1.0))
          >>> logp, x = model.assess({"z": 0.0, "x": 1.0}, 0.0)
          >>> print(f"{logp:.4f}")  # log N(0; 0, 1) + log N(1; 0, 1)
          -2.3379
        """
        handler = Assessing(self.name, choices)
        retval = self._run(handler, args)
        handler.finish()
        return handler.total(), retval

    def generate(self, key, constraints, *args):
        """A trace with the constrained choices fixed and the others drawn from the prior.

        The log weight is the sum of the log densities of the constrained choices: with the
        prior as proposal, ``score - log q(unconstrained) = log p(constrained | unconstrained)``.

        Examples:
          >>> import jax, numpyro.distributions as dist, progvi as pv
          >>> @pv.gen
          ... def model(mu0):
          ...     z = pv.sample("z", dist.Normal(mu0, 1.0))
          ...     return pv.sample("x", dist.Normal(z, 1.0))
          >>> tr, log_w = model.generate(jax.random.key(0), {"x": 1.0}, 0.0)
          >>> z = tr.choices["z"]
          >>> bool(abs(log_w - dist.Normal(z, 1.0).log_prob(1.0)) < 1e-5)
          True
        """
        check_key(key, f"{self.name}.generate(key, constraints, *args)",
                  f"{self.name}.generate(jax.random.key(0), constraints, *args)")
        handler = Generating(self.name, key, constraints)
        retval = self._run(handler, args)
        handler.finish()
        return Trace(handler.choices, handler.total(), retval), handler.total_weight()

    def simulate_in_program(self, *args) -> Trace:
        handler = SimulatingInProgram(self.name)
        retval = self._run(handler, args)
        return Trace(handler.choices, handler.total(), retval)

    def density_in_program(self, choices, *args):
        handler = Assessing(self.name, choices, in_program=True)
        retval = self._run(handler, args)
        handler.finish()
        return handler.total(), retval

    def __repr__(self):
        return f"<pv.gen {self.name}>"


def gen(fn: Callable) -> GenFunction:
    """Makes `fn` a generative function whose choices are its `pv.sample` calls.

    Inside the body, ``pv.sample(address, dist)`` draws (or reads) a choice, and
    ``pv.sample(address, other(*args))`` runs another generative function, whose choices appear
    as a nested dict under `address` and, inside expectation programs, at addresses
    ``"address/..."``.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def encoder(x):
      ...     return pv.sample("z", dist.Normal(x, 1.0))
      >>> @pv.gen
      ... def model(x):
      ...     z = pv.sample("enc", encoder(x))
      ...     return pv.sample("y", dist.Normal(z, 0.5))
      >>> tr = model.simulate(jax.random.key(0), 1.0)
      >>> list(tr.choices), list(tr.choices["enc"])
      (['enc', 'y'], ['z'])
    """
    if isinstance(fn, GenerativeFunction):
        raise TypeError(f"{fn.name} is already a generative function; apply @pv.gen once.")
    if not callable(fn):
        raise TypeError(f"@pv.gen decorates a function, got {type(fn).__name__}.")
    return GenFunction(fn)
