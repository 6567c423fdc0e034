"""The progress bar of `fit`: named, throttled, and quiet when nobody is watching."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

REDRAW_SECONDS = 0.25  # at most about four redraws a second, however short the chunks


def describe(objective, direction: str) -> str:
    """``"maximize elbo"``, with the overridden strategies: ``"maximize elbo [z: reinforce]"``."""
    name = getattr(objective, "__name__", type(objective).__name__)
    overrides = [f"{pattern}: {strategy.name}"
                 for patterns in getattr(objective, "overrides", ())
                 for pattern, strategy in patterns.items()]
    return f"{direction} {name}" + (f" [{', '.join(overrides)}]" if overrides else "")


class Progress:
    """A tqdm bar over the steps of a fit, or nothing."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool | None, file=None):
        stream = sys.stderr if file is None else file
        if enabled is None:  # shown on a terminal, quiet in logs and pipes
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", file=stream,
                        disable=not enabled, mininterval=REDRAW_SECONDS, dynamic_ncols=True)

    def update(self, steps: int, objective: float) -> None:
        # refresh=False: the postfix is drawn with the next throttled redraw, not now.
        self.bar.set_postfix_str(f"objective={objective:.5g}", refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()


__all__ = ["Progress", "describe"]
