"""The interface every gradient strategy implements.

A strategy owns one derivative rule for a sample site. progvi interprets an expectation program
in forward mode, so a rule receives the distribution at the site together with its tangent (a
distribution of the same structure whose leaves are the tangents of the parameters), and returns
dual numbers. There are two kinds of rule:

* a *local* rule (`Strategy.local`) needs nothing but the site: it returns the sampled value and
  its tangent, plus optionally a score term. The interpreter adds
  ``(final value - baseline) * score`` to the program's tangent when the program ends, which is
  REINFORCE's estimator. Local rules work everywhere, inside `lax.scan` bodies too.
* a *continuation* rule (`Strategy.jvp`) receives the rest of the program as a `Continuation`, as
  in ADEV (Lew et al., POPL 2023), and may run it several times (enumeration, measure-valued
  derivatives, leave-one-out).

A strategy is a frozen dataclass and a pytree: fields named in `dynamic_fields` are leaves (so a
baseline can be a value computed in the program), the rest are static configuration. A field may
also hold a stateful `Estimator` (a moving-average baseline): it is static, and at each step the
interpreter replaces it by the value the estimator reads from its state (see `state.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import StrategyError
from .state import Estimator


class Local(NamedTuple):
    """What a local rule returns for one site."""

    value: Any  # the sampled value
    tangent: Any  # its tangent (None: zero)
    score: Any = None  # tangent whose coefficient is (final value - baseline); None: no term
    baseline: Any = 0.0  # subtracted from the final value before it multiplies `score`


class Continuation(NamedTuple):
    """The rest of the program after a sample site, as functions of the site's value."""

    dual: Callable[..., tuple[Any, Any]]  # (value, tangent=None) -> (result, result tangent)
    pure: Callable[[Any], Any]  # value -> result, every later site sampled plainly, no tangents


class Strategy:
    """Base class of gradient strategies. Subclasses implement `local` or `jvp`."""

    name: ClassVar[str] = "strategy"
    dynamic_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, _flatten, _unflatten(cls))
        # A rule that returns the wrong thing fails where it returns, naming the strategy.
        if "local" in cls.__dict__:
            cls.local = _checked_local(cls.__dict__["local"])
        if "jvp" in cls.__dict__:
            cls.jvp = _checked_jvp(cls.__dict__["jvp"])

    @property
    def is_local(self) -> bool:
        return type(self).local is not Strategy.local

    @property
    def has_rule(self) -> bool:
        """Whether the strategy implements `local` or `jvp` (a subclass must implement one)."""
        return self.is_local or type(self).jvp is not Strategy.jvp

    def check(self, address: str, dist: Any) -> None:
        """Raises `StrategyError` if the strategy cannot handle `dist`; called at trace time."""

    def local(self, key, dist, tangent) -> Local:
        raise NotImplementedError(_NO_RULE.format(type(self).__name__))

    def jvp(self, key, dist, tangent, kont: Continuation) -> tuple[Any, Any]:
        raise NotImplementedError(_NO_RULE.format(type(self).__name__))

    def __call__(self, **changes) -> Strategy:
        """A copy with some settings changed, e.g. ``pv.reinforce(baseline=b)``."""
        return dataclasses.replace(self, **changes)


_NO_RULE = (
    "{0} implements neither rule of a gradient strategy. Implement "
    "local(self, key, dist, tangent) -> pv.Local(value, tangent, score=None, baseline=0.0) for "
    "a rule that needs only the site, or jvp(self, key, dist, tangent, kont) -> "
    "(value, tangent) for one that runs the rest of the program (kont.dual / kont.pure); see "
    "docs/custom_strategy.md."
)


def check_strategy(address: str, strategy: Strategy) -> None:
    """Raises a `StrategyError` naming the site if `strategy`'s class is not a usable strategy."""
    cls = type(strategy).__name__
    if not dataclasses.is_dataclass(strategy):
        raise StrategyError(
            f"sample site {address!r}: the strategy {cls} is not a dataclass, but pv.Strategy "
            f"subclasses are frozen dataclasses (their fields are how JAX flattens them). "
            f"Decorate the class: @dataclasses.dataclass(frozen=True) class {cls}(pv.Strategy)."
        )
    if not strategy.has_rule:
        raise StrategyError(f"sample site {address!r}: " + _NO_RULE.format(cls))


def _checked_local(local):
    @functools.wraps(local)
    def checked(self, key, dist, tangent):
        out = local(self, key, dist, tangent)
        if not isinstance(out, Local):
            raise StrategyError(
                f"{type(self).__name__}.local (for a {dist_name(dist)}) returned a "
                f"{type(out).__name__}, but a local rule returns pv.Local(value, tangent, "
                "score=None, baseline=0.0). Write return pv.Local(value, tangent) (or "
                "pv.Local(value, tangent, score) for a score term), not a tuple."
            )
        return out

    return checked


def _checked_jvp(jvp):
    @functools.wraps(jvp)
    def checked(self, key, dist, tangent, kont):
        out = jvp(self, key, dist, tangent, kont)
        if not (isinstance(out, tuple) and len(out) == 2):
            got = (f"a tuple of {len(out)}" if isinstance(out, tuple)
                   else f"a {type(out).__name__}")
            raise StrategyError(
                f"{type(self).__name__}.jvp (for a {dist_name(dist)}) returned {got}, but a "
                "continuation rule returns the pair (value, tangent) of the rest of the program, "
                "e.g. return kont.dual(x, dx)."
            )
        return out

    return checked


def _is_dynamic(s, name) -> bool:
    return name in s.dynamic_fields and not isinstance(getattr(s, name), Estimator)


def _flatten(s):
    fields = [f.name for f in dataclasses.fields(s)]
    dynamic = tuple(n for n in fields if _is_dynamic(s, n))
    static = tuple((n, getattr(s, n)) for n in fields if n not in dynamic)
    return [getattr(s, n) for n in dynamic], (dynamic, static)


def _unflatten(cls):
    def build(aux, values):
        names, static = aux
        obj = object.__new__(cls)
        for name, value in (*static, *zip(names, values, strict=True)):
            object.__setattr__(obj, name, value)
        return obj

    return build


def stateful_field(strategy) -> str | None:
    """The name of the field of `strategy` that holds a stateful `Estimator`, if any."""
    if not dataclasses.is_dataclass(strategy):
        return None
    names = [f.name for f in dataclasses.fields(strategy)
             if isinstance(getattr(strategy, f.name), Estimator)]
    if len(names) > 1:
        raise StrategyError(
            f"pv.{strategy.name} holds stateful estimators in several fields ({names}); a "
            "strategy may hold at most one."
        )
    return names[0] if names else None


def instantiate_tangent(primal, tangent):
    """A concrete tangent for `primal`: `tangent` itself, or a zero of the right tangent dtype."""
    if tangent is not None:
        return tangent
    primal = jnp.asarray(primal)
    if jnp.issubdtype(primal.dtype, jnp.inexact):
        return jnp.zeros_like(primal)
    return np.zeros(primal.shape, dtype=jax.dtypes.float0)


def dist_name(dist) -> str:
    """The distribution's name for messages (an adapted one names its library's class)."""
    return getattr(dist, "display_name", None) or type(dist).__name__


def require(condition: bool, address: str, strategy: Strategy, dist, why: str, fix: str) -> None:
    """Raises a `StrategyError` that names the site, the distribution and the fix."""
    if not condition:
        raise StrategyError(
            f"sample site {address!r}: pv.{strategy.name} cannot be used with "
            f"{dist_name(dist)} because {why}. {fix}"
        )
