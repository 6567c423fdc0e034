"""The errors of generative functions: choice maps that do not fit, combinators misused."""

from __future__ import annotations

from collections.abc import Callable

from ..adev.errors import ProgviError


class ChoiceError(ProgviError, ValueError):
    """A choice map does not fit a generative function.

    Raised for a missing or extra address, a value whose shape or dtype does not match the
    distribution at its address, or a value whose log density is not finite. `address` is the
    slash-joined path of the choice, relative to the generative function the call started from.
    """

    def __init__(self, describe: Callable[[str], str], address: str):
        self.describe = describe
        self.address = address
        super().__init__(describe(address))

    def under(self, prefix: str) -> ChoiceError:
        """The same error seen from the caller that sampled the failing function at `prefix`."""
        return ChoiceError(self.describe, f"{prefix}/{self.address}")


class CombinatorError(ProgviError, ValueError):
    """The arguments of a `vmap` or `scan` combinator do not fit it (axes, lengths, returns)."""
