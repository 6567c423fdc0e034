"""`pv.vmap`: a plate of independent datapoints, one run of a generative function for each."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..adev.handlers import handle, independent
from .choices import check_batched, paths
from .errors import CombinatorError
from .generative_function import GenerativeFunction
from .trace import Trace


class Vmap(GenerativeFunction):
    """Independent runs of `gen_fn` along an axis of its arguments; create one with `pv.vmap`.

    Its choices are those of `gen_fn`, each with a leading axis (one entry per datapoint); its
    score is the sum of the runs' scores, its return value the batched return values.
    """

    def __init__(self, gen_fn: GenerativeFunction, in_axes=0):
        if not isinstance(gen_fn, GenerativeFunction):
            raise TypeError(
                f"pv.vmap needs a generative function, got {type(gen_fn).__name__}. Decorate "
                "the body with @pv.gen first."
            )
        if not (in_axes is None or isinstance(in_axes, int | tuple)):
            raise CombinatorError(
                f"pv.vmap({gen_fn.name}): in_axes={in_axes!r} must be an int, None, or a tuple "
                "with one int or None per argument."
            )
        self.gen_fn, self.in_axes = gen_fn, in_axes

    @property
    def name(self) -> str:
        return f"vmap({self.gen_fn.name})"

    def _axes(self, args) -> tuple:
        if not isinstance(self.in_axes, tuple):
            return (self.in_axes,) * len(args)
        if len(self.in_axes) != len(args):
            raise CombinatorError(
                f"{self.name} has in_axes={self.in_axes} for {len(self.in_axes)} arguments but "
                f"was given {len(args)}. Give one axis (or None) per argument."
            )
        return self.in_axes

    def _size(self, args, axes) -> int:
        """The number of datapoints: the common size of every mapped argument's axis."""
        found = None
        for i, (arg, axis) in enumerate(zip(args, axes, strict=True)):
            if axis is None:
                continue
            for where, leaf in paths(arg):
                shape = jnp.shape(leaf)
                label = f"argument {i}" + (f" at {where!r}" if where else "")
                if not -len(shape) <= axis < len(shape):
                    raise CombinatorError(
                        f"{self.name}: {label} has shape {shape}, which has no axis {axis}. "
                        "Batch it along that axis, or give it in_axes=None if every datapoint "
                        "shares it."
                    )
                if found is None:
                    found = (shape[axis], label)
                elif shape[axis] != found[0]:
                    raise CombinatorError(
                        f"{self.name}: {label} has {shape[axis]} entries along axis {axis} but "
                        f"{found[1]} has {found[0]}. Every mapped argument needs one entry per "
                        "datapoint."
                    )
        if found is None:
            raise CombinatorError(
                f"{self.name} maps no argument (in_axes={self.in_axes!r}), so the number of "
                "datapoints is unknown. Map at least one argument, e.g. in_axes=0."
            )
        return found[0]

    def _batched(self, choices, size, what):
        check_batched(choices, size, f"{self.name} {what}", "datapoint")

    def simulate(self, key, *args) -> Trace:
        """Runs `gen_fn.simulate` for each datapoint, each with its own key.

        Examples:
          >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
          >>> @pv.gen
          ... def point(mu):
          ...     return pv.sample("x", dist.Normal(mu, 1.0))
          >>> pv.vmap(point).simulate(jax.random.key(0), jnp.zeros(3)).choices["x"].shape
          (3,)
        """
        axes = self._axes(args)
        keys = jax.random.split(key, self._size(args, axes))
        tr = jax.vmap(self.gen_fn.simulate, in_axes=(0, *axes))(keys, *args)
        return Trace(tr.choices, jnp.sum(tr.score), tr.retval)

    def assess(self, choices, *args):
        """The sum over datapoints of `gen_fn.assess`; every choice has a leading axis."""
        axes = self._axes(args)
        self._batched(choices, self._size(args, axes), "choices")
        scores, retval = jax.vmap(self.gen_fn.assess, in_axes=(0, *axes))(choices, *args)
        return jnp.sum(scores), retval

    def generate(self, key, constraints, *args):
        """`gen_fn.generate` per datapoint (constraints batched); the weights add up."""
        axes = self._axes(args)
        size = self._size(args, axes)
        self._batched(constraints, size, "constraints")
        keys = jax.random.split(key, size)
        tr, weights = jax.vmap(self.gen_fn.generate, in_axes=(0, 0, *axes))(
            keys, constraints, *args
        )
        return Trace(tr.choices, jnp.sum(tr.score), tr.retval), jnp.sum(weights)

    def simulate_in_program(self, *args) -> Trace:
        # jax.vmap around the body: its sample sites become batched sites of the program, each
        # datapoint drawing with its own key (the core splits the site's key per batch entry).
        # `independent` batches sites whose distribution does not depend on the mapped args.
        axes = self._axes(args)
        size = self._size(args, axes)

        def one(index, *args):
            with handle(independent(index, within=f"pv.vmap({self.gen_fn.name})")):
                return self.gen_fn.simulate_in_program(*args)

        tr = jax.vmap(one, in_axes=(0, *axes))(jnp.arange(size), *args)
        return Trace(tr.choices, jnp.sum(tr.score), tr.retval)

    def density_in_program(self, choices, *args):
        axes = self._axes(args)
        self._batched(choices, self._size(args, axes), "choices")
        scores, retval = jax.vmap(self.gen_fn.density_in_program, in_axes=(0, *axes))(
            choices, *args
        )
        return jnp.sum(scores), retval

    def __repr__(self):
        return f"<pv.vmap {self.gen_fn.name} in_axes={self.in_axes!r}>"


def vmap(gen_fn: GenerativeFunction, in_axes: int | tuple | None = 0) -> Vmap:
    """A plate: independent runs of `gen_fn`, one per entry along `in_axes` of its arguments.

    Choices are batched along axis 0; the score sums the per-datapoint scores. Inside an
    expectation program the body runs under `jax.vmap`, so every datapoint draws its own value
    (only strategies without continuations, such as `pv.reparam` and `pv.reinforce`, run
    there). For per-datapoint gradient estimators, vmap the whole estimate over datapoints
    instead (see the guide on generative functions).

    Args:
      gen_fn: the generative function of one datapoint.
      in_axes: an int, None (shared), or a tuple with one of those per argument.

    Returns:
      A `Vmap` generative function.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.gen
      ... def point(mu, scale):
      ...     return pv.sample("x", dist.Normal(mu, scale))
      >>> plate = pv.vmap(point, in_axes=(0, None))
      >>> logp, _ = plate.assess({"x": jnp.zeros(4)}, jnp.zeros(4), 1.0)
      >>> print(f"{logp:.4f}")  # 4 log N(0; 0, 1)
      -3.6758
    """
    return Vmap(gen_fn, in_axes)
