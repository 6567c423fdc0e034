"""`pv.scan`: sequential models, one run of a step function per time step."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..adev.chain import ChainState, forward
from ..adev.handlers import handle
from .choices import check_batched
from .errors import CombinatorError
from .generative_function import GenerativeFunction
from .trace import Trace


class Scan(GenerativeFunction):
    """Runs of ``gen_fn(carry, x) -> (carry, y)`` over time; create one with `pv.scan`.

    Its arguments are ``(init, xs)`` (``xs`` may be left out when `length` is given); its choices
    are the step's choices with a leading time axis, its score the sum of the steps' scores, and
    its return value ``(final carry, ys)``.
    """

    def __init__(self, gen_fn: GenerativeFunction, length: int | None = None):
        if not isinstance(gen_fn, GenerativeFunction):
            raise TypeError(
                f"pv.scan needs a generative function, got {type(gen_fn).__name__}. Decorate "
                "the step with @pv.gen first."
            )
        if length is not None and not (isinstance(length, int) and length >= 0):
            raise CombinatorError(
                f"pv.scan({gen_fn.name}): length={length!r} must be a non-negative int."
            )
        self.gen_fn, self.length = gen_fn, length

    @property
    def name(self) -> str:
        return f"scan({self.gen_fn.name})"

    def _parts(self, args):
        """(init, xs, length) from the arguments, checked against `length`."""
        if len(args) not in (1, 2):
            raise CombinatorError(
                f"{self.name} takes (init, xs) or (init,) with length=..., got {len(args)} "
                "arguments. Pack extra inputs into xs (per step) or the carry (shared)."
            )
        init, xs = args[0], args[1] if len(args) == 2 else None
        lengths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(xs)}
        if None in lengths or len(lengths) > 1:
            raise CombinatorError(
                f"{self.name}: the leaves of xs have leading axes {sorted(map(str, lengths))}; "
                "each needs the same leading (time) axis."
            )
        if not lengths:
            if self.length is None:
                raise CombinatorError(
                    f"{self.name} was given no xs, so the number of steps is unknown. Write "
                    f"pv.scan({self.gen_fn.name}, length=T)."
                )
            return init, xs, self.length
        (n,) = lengths
        if self.length is not None and n != self.length:
            raise CombinatorError(
                f"{self.name} has length={self.length} but xs has {n} steps. Make them agree "
                "(or leave length out)."
            )
        return init, xs, n

    def _split(self, retval):
        if not (isinstance(retval, tuple | list) and len(retval) == 2):
            raise CombinatorError(
                f"{self.name}: the step {self.gen_fn.name} must return a pair (carry, y), got "
                f"{type(retval).__name__}. End it with `return carry, y` (y may be None)."
            )
        return retval[0], retval[1]

    def _scan(self, step, init, inputs, n):
        """Scans ``step(carry, inputs_t) -> (score_t, retval_t, extra_t)``; sums the scores."""

        def body(carry, inputs_t):
            score, retval, extra = step(carry, inputs_t)
            new_carry, y = self._split(retval)
            return new_carry, (score, y, extra)

        carry, (scores, ys, extra) = jax.lax.scan(body, init, inputs, length=n)
        return jnp.sum(scores), (carry, ys), extra

    def simulate(self, key, *args) -> Trace:
        """Runs `gen_fn.simulate` at each step, each with its own key.

        Examples:
          >>> import jax, numpyro.distributions as dist, progvi as pv
          >>> @pv.gen
          ... def step(z, _):
          ...     z = pv.sample("z", dist.Normal(z, 1.0))
          ...     return z, z
          >>> tr = pv.scan(step, length=5).simulate(jax.random.key(0), 0.0)
          >>> tr.choices["z"].shape, tr.retval[1].shape
          ((5,), (5,))
        """
        init, xs, n = self._parts(args)

        def step(carry, inputs_t):
            k, x = inputs_t
            tr = self.gen_fn.simulate(k, carry, x)
            return tr.score, tr.retval, tr.choices

        score, retval, choices = self._scan(step, init, (jax.random.split(key, n), xs), n)
        return Trace(choices, score, retval)

    def assess(self, choices, *args):
        """The sum over steps of `gen_fn.assess`; every choice has a leading time axis.

        A chain whose step enumerates its state (`pv.enum_parallel` or `pv.enum` at that site)
        and whose choices leave the state out is summed over the state's values by the forward
        algorithm: the log marginal density of the given choices, in time linear in the length
        (see `pv.enum_chain`), and the return value is None (it depends on the states).

        Examples:
          >>> import jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
          >>> trans = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # row 2: the start
          >>> @pv.gen
          ... def step(z, _):
          ...     z = pv.sample("z", dist.Categorical(probs=trans[z]), pv.enum_parallel)
          ...     pv.sample("x", dist.Normal(2.0 * z - 1.0, 1.0))
          ...     return z, None
          >>> hmm = pv.scan(step, length=3)
          >>> log_px, _ = hmm.assess({"x": jnp.array([-0.9, 1.2, 0.8])}, 2)  # z summed out
          >>> print(f"{log_px:.4f}")
          -5.0136
        """
        init, xs, n = self._parts(args)
        check_batched(choices, n, f"{self.name} choices", "step")
        if self._sums_out(choices, init, xs, n, self.gen_fn.assess):
            return self._chain(choices, init, xs, n, self.gen_fn.assess), None

        def step(carry, inputs_t):
            c, x = inputs_t
            score, retval = self.gen_fn.assess(c, carry, x)
            return score, retval, None

        score, retval, _ = self._scan(step, init, (choices, xs), n)
        return score, retval

    def generate(self, key, constraints, *args):
        """`gen_fn.generate` per step (constraints stacked over time); the weights add up."""
        init, xs, n = self._parts(args)
        check_batched(constraints, n, f"{self.name} constraints", "step")

        def step(carry, inputs_t):
            k, c, x = inputs_t
            tr, weight = self.gen_fn.generate(k, c, carry, x)
            return tr.score, tr.retval, (tr.choices, weight)

        keys = jax.random.split(key, n)
        score, retval, (choices, weights) = self._scan(step, init, (keys, constraints, xs), n)
        return Trace(choices, score, retval), jnp.sum(weights)

    def simulate_in_program(self, *args) -> Trace:
        # lax.scan around the step: its sites become sites of the program's scan, which the
        # interpreter runs with one key per iteration and score terms carried through the loop.
        init, xs, n = self._parts(args)

        def step(carry, x):
            tr = self.gen_fn.simulate_in_program(carry, x)
            return tr.score, tr.retval, tr.choices

        score, retval, choices = self._scan(step, init, xs, n)
        return Trace(choices, score, retval)

    def density_in_program(self, choices, *args):
        init, xs, n = self._parts(args)
        check_batched(choices, n, f"{self.name} choices", "step")
        op = self.gen_fn.density_in_program
        if self._sums_out(choices, init, xs, n, op):
            return self._chain(choices, init, xs, n, op), None

        def step(carry, inputs_t):
            c, x = inputs_t
            score, retval = self.gen_fn.density_in_program(c, carry, x)
            return score, retval, None

        score, retval, _ = self._scan(step, init, (choices, xs), n)
        return score, retval

    def _sums_out(self, choices, init, xs, n, op) -> bool:
        """Whether the step leaves an enumerated state out of `choices` (then: a chain)."""
        if n == 0:
            return False
        probe = ChainState(None, self.name)
        with handle(probe):
            op(jax.tree.map(lambda c: c[0], choices), init, jax.tree.map(lambda x: x[0], xs))
        return probe.address is not None

    def _chain(self, choices, init, xs, n, op):
        """The log density of `choices` with the step's state summed out (`chain.forward`)."""
        where = f"{self.name} (its state summed out)"

        def probe(carry, inputs):
            return op(inputs[0], carry, inputs[1])

        def transition(carry, inputs, value):
            with handle(ChainState(value, where)):
                score, retval = op(inputs[0], carry, inputs[1])
            return score, self._split(retval)[0]

        return forward(where, transition, probe, init, (choices, xs), n)

    def __repr__(self):
        return f"<pv.scan {self.gen_fn.name} length={self.length!r}>"


def scan(gen_fn: GenerativeFunction, length: int | None = None) -> Scan:
    """A sequential model: ``gen_fn(carry, x) -> (carry, y)`` run once per step.

    Choices are stacked along a leading time axis and the score sums over steps. Inside an
    expectation program the step runs under `lax.scan` (each iteration with its own key; only
    strategies without continuations, such as `pv.reparam` and `pv.reinforce`, run there).

    Args:
      gen_fn: the step, a generative function of ``(carry, x)`` returning ``(carry, y)``.
      length: the number of steps; needed when no ``xs`` are given.

    Returns:
      A `Scan` generative function of ``(init, xs)``, returning ``(final carry, ys)``.

    Examples:
      >>> import jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def step(z, _):
      ...     z = pv.sample("z", dist.Normal(z, 1.0))
      ...     return z, None
      >>> walk = pv.scan(step, length=3)
      >>> logp, (last, _) = walk.assess({"z": jnp.array([0.0, 0.0, 1.0])}, 0.0)
      >>> print(f"{logp:.4f} {last:.1f}")  # 3 log N(0; 0, 1) - 1/2
      -3.2568 1.0
    """
    return Scan(gen_fn, length)
