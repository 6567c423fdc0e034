"""The error the objective library raises, and the checks of its arguments."""

from __future__ import annotations

import operator
from collections.abc import Mapping

from ...adev.errors import ProgviError


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
