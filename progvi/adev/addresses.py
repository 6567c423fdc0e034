"""Address patterns and the one-address-per-site rule."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from ._compat import sub_jaxprs
from .errors import AddressError
from .primitive import sample_p


def match(patterns: Mapping[str, object], address: str):
    """The value for `address`: its exact pattern first, else the first matching glob."""
    if address in patterns:
        return patterns[address]
    for pattern, value in patterns.items():
        if fnmatch.fnmatchcase(address, pattern):
            return value
    return None


def site_addresses(jaxpr) -> list[str]:
    """The addresses of the sample sites on any one path through `jaxpr`; raises on duplicates.

    Branches of a `cond` are alternatives, so an address may appear once in each branch.
    """
    seen: list[str] = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is sample_p:
            found = [eqn.params["address"]]
        elif eqn.primitive.name == "cond":
            found = sorted({a for br in eqn.params["branches"] for a in site_addresses(br.jaxpr)})
        else:
            found = [a for inner in sub_jaxprs(eqn) for a in site_addresses(inner)]
        for address in found:
            if address in seen:
                raise AddressError(
                    f"address {address!r} is sampled twice in one program. Each pv.sample call "
                    'needs its own address: write e.g. pv.sample(f"z_{i}", ...) in a Python loop, '
                    "or use lax.scan so that one site stands for every iteration."
                )
            seen.append(address)
    return seen
