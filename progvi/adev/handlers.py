"""The effect-handler stack that gives `sample` its meaning.

`sample` builds a `Site` and hands it to the innermost active handler; each handler either answers
it or passes it (perhaps rewritten) to the handler below. An expectation program installs a
handler that turns sites into the `sample_p` primitive; generative functions install handlers that
record choices or score them. The stack lives in a `ContextVar`, so it is scoped to the dynamic
extent of a `with` block and private to each thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any

from .errors import AddressError, SampleOutsideProgramError, StrategyError
from .foreign import as_distribution

_STACK: contextvars.ContextVar[tuple[Handler, ...]] = contextvars.ContextVar(
    "progvi_handlers", default=()
)


@dataclasses.dataclass(frozen=True)
class Site:
    """One call of `sample`: an address, what to sample, and the strategy asked for (or None).

    `batch` holds the indices of the `independent` blocks the site is inside (see there), and
    `within` what each block is (``"pv.particles"``, ``"pv.vmap(f)"``), for error messages.
    """

    address: str
    dist: Any
    strategy: Any = None
    batch: tuple = ()
    within: tuple = ()


class Handler:
    """Answers sites; `sample` receives the site and a function that passes it further down."""

    def sample(self, site: Site, below: Callable[[Site], Any]) -> Any:
        return below(site)


@contextlib.contextmanager
def handle(handler: Handler):
    """Installs `handler` as the innermost handler for the duration of the block."""
    token = _STACK.set(_STACK.get() + (handler,))
    try:
        yield handler
    finally:
        _STACK.reset(token)


class independent(Handler):
    """Inside ``jax.vmap`` over `index`, makes every site draw independently along that axis.

    A sample site under `jax.vmap` is batched only if one of its operands is; a site whose
    distribution does not depend on the mapped arguments (``Normal(0, 1)``) would otherwise draw
    one value shared by every entry. This handler attaches the mapped `index` to each site as an
    extra operand, so the site is batched along the axis and each entry gets its own key.
    `within` names the block in error messages (a strategy that needs the rest of the program
    cannot run in it): ``"pv.particles"`` by default, ``"pv.vmap(f)"`` for the combinator.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> from progvi.adev import handle, independent
      >>> @pv.expectation
      ... def three_draws():
      ...     def one(i):
      ...         with handle(independent(i)):
      ...             return pv.sample("x", dist.Normal(0.0, 1.0))
      ...     return jax.vmap(one)(jnp.arange(3))
      >>> x = three_draws.estimate(jax.random.key(0))
      >>> bool(x[0] != x[1] and x[1] != x[2])
      True
    """

    def __init__(self, index, within: str = "pv.particles"):
        self.index, self.within = index, within

    def sample(self, site, below):
        return below(dataclasses.replace(site, batch=(*site.batch, self.index),
                                         within=(*site.within, self.within)))


def active() -> tuple[Handler, ...]:
    """The installed handlers, innermost last; empty outside programs and generative functions."""
    return _STACK.get()


def dispatch(stack: tuple[Handler, ...], site: Site) -> Any:
    """Hands `site` to the innermost handler of `stack` (a stack captured with `active`)."""
    return _dispatch(stack, site)


def _dispatch(stack: tuple[Handler, ...], site: Site) -> Any:
    if not stack:
        raise SampleOutsideProgramError(
            f"pv.sample({site.address!r}, ...) was called outside an expectation program or a "
            "generative function. Decorate the function that calls it with @pv.expectation (and "
            "call obj.estimate(key, ...)) or with @pv.gen (and call gf.simulate(key, ...))."
        )
    *rest, top = stack
    return top.sample(site, lambda s: _dispatch(tuple(rest), s))


def sample(address: str, dist: Any, strategy: Any = None) -> Any:
    """Draws a random choice at `address` from `dist`.

    Inside an expectation program the draw goes through the gradient `strategy` (default:
    reparameterization where the distribution has it, REINFORCE otherwise). Inside a generative
    function the choice is recorded in its trace.

    Args:
      address: the name of the choice, unique within one program.
      dist: a `numpyro.distributions.Distribution`, a distribution of a library with an adapter
        in `progvi.interop` (a TFP ``tfd`` distribution), or, in generative functions, a call
        of another generative function.
      strategy: a gradient strategy such as `pv.reparam`, `pv.reinforce`, `pv.enum`, `pv.mvd`.

    Returns:
      The sampled value.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def second_moment(mu):
      ...     x = pv.sample("x", dist.Normal(mu, 1.0))
      ...     return x ** 2
      >>> g = second_moment.grad(jax.random.key(0), 1.5)  # unbiased for d/dmu (mu^2 + 1) = 3
    """
    if not isinstance(address, str) or not address:
        raise AddressError(
            f"pv.sample needs a non-empty string address, got {address!r}. "
            'Write pv.sample("z", dist.Normal(0.0, 1.0)).'
        )
    if strategy is not None:
        from .strategy import Strategy

        if not isinstance(strategy, Strategy):
            raise StrategyError(
                f"pv.sample({address!r}, ...): strategy={strategy!r} is not a gradient strategy. "
                "Pass one of pv.reparam, pv.reinforce, pv.enum, pv.mvd, pv.leave_one_out, or a "
                "subclass of pv.Strategy."
            )
    dist = as_distribution(dist, f"sample site {address!r}")
    return _dispatch(_STACK.get(), Site(address, dist, strategy))
