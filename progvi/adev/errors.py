"""The errors progvi raises for programs it cannot estimate."""


class ProgviError(Exception):
    """Base class of progvi's errors: each says what was wrong, where, and how to fix it."""


class StrategyError(ProgviError, TypeError):
    """A gradient strategy does not apply to the distribution at a sample site."""


class SampleOutsideProgramError(ProgviError, RuntimeError):
    """`pv.sample` was called outside an expectation program or a generative function."""


class AddressError(ProgviError, ValueError):
    """An address is used twice in one program, or is not a string."""


class ProgramError(ProgviError, TypeError):
    """An expectation program has a shape or structure progvi cannot estimate."""


class ValidationError(ProgviError, ValueError):
    """Inside `pv.validation()`: a distribution's parameter is outside its constraint (run time)."""
