"""Estimates whose draws at chosen top-level sites vary while the others' are held fixed.

The variance diagnostics measure how much of an estimator's variance each site contributes by
varying one site's draws (its key) with every other site's draws held. Only the top level of the
program is split this way: a site inside a loop, a plate or a nested call belongs to the group of
that construct's addresses.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from .addresses import addresses_in
from .expectation import Expectation, _flat_tangents
from .interpreter import Frame, State, _plan, _Site, finish, run
from .static import hide, strip


class SiteGroup(NamedTuple):
    """A top-level equation with sample sites: its addresses and the salt of its key."""

    addresses: tuple[str, ...]
    salt: int

    @property
    def label(self) -> str:
        return ", ".join(self.addresses) if len(self.addresses) <= 3 else (
            f"{self.addresses[0]}, … ({len(self.addresses)} sites)"
        )


def site_groups(program: Expectation, *args) -> list[SiteGroup]:
    """The top-level groups of sample sites of `program` at `args`, in program order."""
    plan = _plan(program.trace(*args).jaxpr)
    steps = [step for step in plan.steps if isinstance(step, _Site)]
    return [SiteGroup(tuple(addresses_in(step.eqn)), plan.salts[step.index]) for step in steps]


def pinned_grad(program: Expectation, varied: frozenset[int], argnums: int | tuple[int, ...]):
    """``grad(key, held, *args)``: the gradient estimate whose draws come from `key` at the
    top-level sites with a salt in `varied` and from `held` at every other site."""

    def evaluate(key, held, args, tangents):
        closed = program.trace(*args)
        flat = jax.tree.leaves(args)
        duals = list(zip(flat, _flat_tangents(tangents, len(flat)), strict=True))
        frame = Frame(key, pin=(held, varied))
        return run(closed.jaxpr, closed.consts, duals, frame, State(), finish)

    @jax.custom_jvp
    def estimate(key, held, *args):
        return evaluate(key, held, args, None)[0]

    def estimate_jvp(primals, tangents):
        key, held, *args = primals
        return evaluate(key, held, tuple(args), tuple(tangents[2:]))

    estimate.defjvp(estimate_jvp, symbolic_zeros=True)
    shifted = tuple(a + 2 for a in argnums) if isinstance(argnums, tuple) else argnums + 2
    grad = jax.grad(estimate, argnums=shifted)
    return lambda key, held, *args: strip(grad(key, held, *hide(args)))


__all__ = ["SiteGroup", "pinned_grad", "site_groups"]
