"""`choose_strategies`: a strategy per address, picked by variance × time on pilot estimates."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax

from ..adev import Expectation, Strategy, with_strategies
from .compare import StrategyComparison, compare_strategies


class StrategyChoice(NamedTuple):
    """What ``choose_strategies(..., return_report=True)`` returns beside the program."""

    strategies: dict[str, Strategy]  # the choice, by address pattern
    tables: dict[str, StrategyComparison]  # the pilot comparison made at each pattern
    seconds: float  # wall time of the whole choice, compiling included


def choose_strategies(
    key: jax.Array,
    objective: Expectation,
    args: tuple,
    candidates: Mapping[str, Sequence[Strategy] | Mapping[str, Strategy]],
    *,
    num_estimates: int = 200,
    argnums: int | tuple[int, ...] = 0,
    return_report: bool = False,
) -> Expectation | tuple[Expectation, StrategyChoice]:
    """`objective` with, at each address pattern, the candidate strategy of lowest variance × time.

    A heuristic, greedy and local: the patterns are visited in the order given; at each, every
    candidate strategy is tried with the choices made so far at the earlier patterns (and the
    program's own strategies elsewhere), on pilot gradient estimates at `args`, and the one with the
    lowest variance × time is kept, where the variance is the part the pattern's own sites cause,
    the other sites' draws held (`compare_strategies` with ``focus=pattern``): the variance the
    other sites cause changes little with the pattern's strategy and would otherwise drown the
    difference. It does not search combinations, and the choice holds for parameters near `args`:
    variances change as training moves them, so choose again if they move far.


    Its cost is two compilations and ``2 * num_estimates`` estimates (plus a few timed calls)
    per candidate per pattern; ``return_report=True`` gives the wall time it took.

    Args:
      key: a `jax.random` key.
      objective: the `@pv.expectation` objective.
      args: the tuple of its arguments (the pilot point).
      candidates: a dict from an address pattern (as in `pv.with_strategies`) to the strategies
        to try there: a list, or a dict from a name to a strategy.
      num_estimates: pilot gradient estimates per candidate.
      argnums: the arguments the gradient is taken with respect to.
      return_report: also return a `StrategyChoice` (the choices, the pilot tables, the cost).

    Returns:
      The program ``pv.with_strategies(objective, choice)``; with ``return_report=True``, the
      pair ``(program, report)`` whose report is a `StrategyChoice`.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def loss(theta):
      ...     b = pv.sample("b", dist.Bernoulli(logits=theta))
      ...     return (b - 0.3) ** 2
      >>> program, report = pv.choose_strategies(
      ...     jax.random.key(0), loss, (0.5,), {"b": [pv.reinforce, pv.enum]},
      ...     num_estimates=100, return_report=True)
      >>> report.strategies
      {'b': Enum(parallel=False)}
    """
    if not isinstance(candidates, Mapping) or not candidates:
        raise TypeError(
            "choose_strategies: candidates must be a non-empty dict from an address pattern to "
            'the strategies to try there, e.g. {"b": [pv.reinforce, pv.mvd, pv.enum]}.'
        )
    start = time.perf_counter()
    chosen: dict[str, Strategy] = {}
    tables = {}
    for pattern, options in candidates.items():
        named = _named(pattern, options)
        trials = {name: {**chosen, pattern: s} for name, s in named.items()}
        key, sub = jax.random.split(key)
        table = compare_strategies(sub, objective, args, trials, num_estimates=num_estimates,
                                   argnums=argnums, per_site=False, focus=pattern)
        chosen[pattern] = named[table.best]
        tables[pattern] = table
    program = with_strategies(objective, chosen)
    if return_report:
        return program, StrategyChoice(dict(chosen), tables, time.perf_counter() - start)
    return program


def _named(pattern, options) -> dict[str, Strategy]:
    if isinstance(options, Mapping):
        named = dict(options)
    elif isinstance(options, Sequence) and not isinstance(options, str):
        named = {}
        for s in options:
            named.setdefault(_name(s), s)
    else:
        named = {}
    if not named or not all(isinstance(s, Strategy) for s in named.values()):
        raise TypeError(
            f"choose_strategies: the candidates for {pattern!r} are {options!r}; give a "
            "non-empty list of strategies (e.g. [pv.reinforce, pv.mvd]) or a dict from a name "
            "to a strategy."
        )
    return named


def _name(strategy: Strategy) -> str:
    """The strategy's class name if its settings are the defaults, else its repr."""
    cls = type(strategy)
    try:
        default = cls()
    except TypeError:
        default = None
    same = default is not None and dataclasses.is_dataclass(strategy) and default == strategy
    return cls.__name__.lower() if same else repr(strategy)


__all__ = ["StrategyChoice", "choose_strategies"]

