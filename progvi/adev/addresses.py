"""Address patterns and the one-address-per-site rule."""

from __future__ import annotations

import fnmatch
import zlib
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
    constructs: set[str] = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive is sample_p:
            found = [eqn.params["address"]]
        elif eqn.primitive.name == "progvi_log_expectation":
            address = eqn.params["address"]
            if address in constructs:
                raise AddressError(
                    f"two pv.log_expectation constructs have the address {address!r} (by default "
                    "the inner program's name). Pass each its own address=..., e.g. "
                    f'address="{address}_2".'
                )
            constructs.add(address)
            found = site_addresses(eqn.params["jaxpr"].jaxpr)
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


def addresses_in(eqn) -> list[str]:
    """The addresses of the sample sites in one equation (its own, or those of its bodies)."""
    if eqn.primitive is sample_p:
        return [eqn.params["address"]]
    return sorted({a for inner in sub_jaxprs(eqn) for a in _all_addresses(inner)})


def _all_addresses(jaxpr):
    for eqn in jaxpr.eqns:
        yield from addresses_in(eqn)


def address_salt(eqn) -> int:
    """A number derived from the addresses in `eqn`, to fold into the key of its draws.

    Keying draws by address, not by the equation's position, keeps them the same when unrelated
    equations come and go (a dtype conversion of a Python-float argument, an edit elsewhere).
    """
    return zlib.crc32("|".join(addresses_in(eqn)).encode()) & 0x7FFFFFFF
