"""The error the objective library raises, and the checks of its arguments."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Mapping

from ...adev.errors import ProgviError
from ...gen.choices import addresses_of, paths
from ...gen.errors import ChoiceError


class ObjectiveError(ProgviError, ValueError):
    """An objective was given an argument it cannot use (a particle count, an alpha, args)."""


def check_count(
    objective: str, num_particles, least: int = 1, call: str = "model, guide, obs, "
) -> int:
    """`num_particles` as an int, or an `ObjectiveError` saying why it cannot be one."""
    try:
        count = operator.index(num_particles)
    except TypeError:
        count = None
    if count is None or count < least:
        raise ObjectiveError(
            f"pv.{objective}: num_particles={num_particles!r}, but it must be a Python int of at "
            f"least {least}: it is the number of particles, a shape fixed when the program is "
            f"traced. Write e.g. pv.{objective}({call}{max(least, 5)}, ...)."
        )
    return count


def check_call(objective: str, obs, **arg_tuples) -> None:
    """Raises unless `obs` is a choice map and each of `arg_tuples` (by name) is a tuple."""
    if not isinstance(obs, Mapping):
        raise ObjectiveError(
            f"pv.{objective}: obs is a {type(obs).__name__}, but it must be a choice map (a dict "
            'from the model\'s observed addresses to values), e.g. {"x": x}; pass {} if the '
            "model observes nothing."
        )
    for name, args in arg_tuples.items():
        if not isinstance(args, tuple):
            raise ObjectiveError(
                f"pv.{objective}: {name} is a {type(args).__name__}, but it must be the tuple of "
                f"arguments the function is called with. Write {name}=(value,) for one argument."
            )


@contextlib.contextmanager
def explained(objective: str, model, guide, obs, model_args: tuple, guide_args: tuple):
    """Re-raises a `ChoiceError` of the block in terms of the objective's arguments.

    Inside an objective, a choice map that does not fit the model is almost always an `obs`
    that does not match the model's observed addresses or a guide whose choices are not the
    model's latent ones; the model's own message ("no value is given at 'x'") names neither.
    The addresses of the model and the guide are found, on the error path only, by tracing
    their `simulate` abstractly (`addresses_of`).
    """
    try:
        yield
    except ChoiceError as err:
        message = _mismatch(objective, model, guide, obs, model_args, guide_args)
        if message is None:
            raise
        raise ChoiceError(lambda a: message, err.address) from None


def _mismatch(objective, model, guide, obs, model_args, guide_args):
    model_name, guide_name = getattr(model, "name", "the model"), getattr(guide, "name", "guide")
    observed = {address for address, _ in paths(obs)}
    in_model = addresses_of(model, *model_args)
    in_guide = addresses_of(guide, *guide_args)
    if in_model is None or in_guide is None:
        return None
    head = f"pv.{objective}({model_name}, {guide_name}, obs, ...)"
    unknown = sorted(observed - in_model)
    if unknown:
        return (
            f"{head}: obs gives a value at {unknown[0]!r}, but {model_name} samples no such "
            f"address (it samples {sorted(in_model)}). Correct the spelling in obs, or remove it."
        )
    both = sorted(observed & in_guide)
    if both:
        return (
            f"{head}: obs gives a value at {both[0]!r}, which the guide {guide_name} also "
            "samples. An address is either observed (in obs) or latent (sampled by the guide): "
            "remove it from obs or from the guide."
        )
    extra = sorted(in_guide - in_model)
    if extra:
        return (
            f"{head}: the guide {guide_name} samples {extra[0]!r}, but {model_name} samples no "
            f"such address (it samples {sorted(in_model)}). The guide's choices must be the "
            "model's latent choices, at the same addresses: rename or remove it."
        )
    unset = sorted(in_model - observed - in_guide)
    if unset:
        return (
            f"{head}: {model_name} samples {unset[0]!r}, but neither obs (which gives "
            f"{sorted(observed)}) nor the guide {guide_name} (which samples {sorted(in_guide)}) "
            "gives it a value. Add it to obs if it is observed, or sample it in the guide."
        )
    return None
