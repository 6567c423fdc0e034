"""Enumeration: sum the rest of the program over a finite support.

``E[f(x)] = Σ_k p_k f(k)`` and ``d/dθ E[f(x)] = Σ_k (dp_k f(k) + p_k df(k))``: exact in this site
(the estimate's variance comes only from later sites). The sequential form runs the continuation
once per value; the parallel form vmaps it over the support.

The sequential form traces the rest of the program once per value, so sequential sites in a row
multiply: ten Bernoulli sites trace the end of the program 2^10 times (minutes of compilation,
against a second or two for the parallel form). So the interpreter (`Enum.form`) runs a
sequential site in parallel, with a warning that names it, when its support has more than
`Enum.sequential_support` values, or when the sequential form would trace the end of the program
more than `Enum.sequential_copies` times (the product of the support sizes of the sequential
sites around it, its own and those after it, as far as the interpreter sees them when it reaches
the site), or when it follows a site that switched: sequential copies inside a vmapped
continuation compile no faster than vmapped ones, so a long chain runs in parallel throughout.
Supports of more than `Enum.max_support` values are refused: the float32 probabilities of such
supports lose mass (numpyro 0.22's ``Binomial(10**6, 0.3)`` sums to 0.69 over its support) and
the vmapped continuation grows with them.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import ClassVar

import jax
import jax.numpy as jnp

from .strategy import Strategy, require


def support(dist, dtype):
    """The values of a scalar discrete distribution's support, cast to the site's dtype."""
    return jnp.asarray(dist.enumerate_support(expand=False), dtype).reshape(-1)


def support_size(make_dist, *avals) -> int | None:
    """The size of the support of ``make_dist(*avals)``, or None where only values tell it."""
    try:
        shape = jax.eval_shape(lambda *xs: make_dist(*xs).enumerate_support(expand=False),
                               *avals).shape
    except Exception:  # noqa: BLE001  (e.g. Binomial's total_count, a traced argument)
        return None
    return int(shape[0]) if shape else 1


@dataclasses.dataclass(frozen=True)
class Enum(Strategy):
    """Exact sum over the support; ``parallel=True`` vmaps the continuation over the values.

    Limits (class attributes): a support of more than ``max_support`` (10,000) values is an
    error at trace time (use `pv.reinforce` or `pv.mvd` for such a site). A sequential site
    (``pv.enum``) is enumerated in parallel instead, with a warning that names it, when its
    support has more than ``sequential_support`` (16) values, when the sequential form would
    trace the end of the program more than ``sequential_copies`` (16) times, counting the
    sequential sites around and after it (five Bernoulli sites in a row: 32), or when it
    follows a site that switched. Write ``pv.enum_parallel`` for such sites to choose the
    parallel form yourself.
    """

    parallel: bool = False
    name = "enum"
    max_support: ClassVar[int] = 10_000
    sequential_support: ClassVar[int] = 16
    sequential_copies: ClassVar[int] = 16

    def check(self, address, dist):
        require(
            dist.has_enumerate_support, address, self, dist, "its support is not finite",
            "Use pv.reparam or pv.reinforce for it.",
        )
        require(
            dist.batch_shape == () and dist.event_shape == (), address, self, dist,
            f"it has batch shape {dist.batch_shape} and event shape {dist.event_shape} (the joint "
            "support grows exponentially)",
            "Give each element its own address, or vmap the whole estimate over datapoints.",
        )
        size = support_size(lambda: dist)
        if size is not None:
            self.check_size(address, dist, size)

    def check_size(self, address, dist, size):
        """Raises a `StrategyError` naming the site if its support is too large to enumerate."""
        require(
            size <= self.max_support, address, self, dist,
            f"its support has {size} values, more than the {self.max_support} that enumeration "
            "takes (float32 probabilities of so many values do not sum to 1, and the "
            "enumerated program grows with the support)",
            "Use pv.reinforce or pv.mvd for it.",
        )

    def jvp(self, key, dist, tangent, kont):
        values = support(dist, jnp.result_type(dist.sample(key)))

        def weighted(value):
            prob, dprob = jax.jvp(lambda d: jnp.exp(d.log_prob(value)), (dist,), (tangent,))
            ret, dret = kont.dual(value)
            return prob * ret, dprob * ret + prob * dret

        if self.parallel:
            rets, drets = jax.vmap(weighted)(values)
            return jnp.sum(rets, 0), jnp.sum(drets, 0)
        terms = [weighted(v) for v in values]
        return sum(r for r, _ in terms), sum(d for _, d in terms)

    def fanout(self, size: int | None) -> int:
        """How many times this site traces the rest of the program, for a support of `size`.

        1 for the parallel form and for supports that switch to it (or whose size is unknown).
        """
        if self.parallel or size is None or size > self.sequential_support:
            return 1
        return size

    def form(self, address: str, size: int, traces: int, switched: str | None) -> Enum:
        """This sequential site, or its parallel form with a warning naming the site and why.

        Called by the interpreter when it reaches the site. `traces`: how many times the
        sequential form would trace the end of the program (the product of the support sizes of
        the sequential sites around this one, its own and those after it); `switched`: an
        earlier site that switched, if any (sequential copies inside its vmapped continuation
        would compile no faster than vmapped ones).
        """
        if size > self.sequential_support:
            why = (f"its support has {size} values, more than {self.sequential_support}, and "
                   "the sequential form traces the rest of the program once per value")
        elif traces > self.sequential_copies:
            why = (f"with the sequential pv.enum sites around and after it, the sequential form "
                   f"would trace the end of the program {traces} times (more than "
                   f"{self.sequential_copies}: each sequential site multiplies it by its support "
                   "size)")
        elif switched is not None:
            why = (f"it follows sample site {switched!r}, which runs in parallel (sequential "
                   "copies inside a vmapped continuation compile no faster than vmapped ones)")
        else:
            return self
        warnings.warn(
            f"sample site {address!r}: pv.enum runs in parallel (vmapped over its {size} values) "
            f"because {why}. Write strategy=pv.enum_parallel for this site (or "
            f"pv.with_strategies(program, {{{address!r}: pv.enum_parallel}})) to choose that "
            "form and silence this warning.",
            stacklevel=2,
        )
        return dataclasses.replace(self, parallel=True)


enum = Enum()
"""Exact enumeration of a finite support, one value after another."""
enum_parallel = Enum(parallel=True)
"""Exact enumeration of a finite support, all values at once under `jax.vmap`."""
