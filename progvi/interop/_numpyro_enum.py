"""Exact sums over the enumerated sites of a NumPyro model: plated variable elimination.

An enumerated site that is not given a value takes its whole support, laid along an
enumeration dimension of its own to the left of every plate (as ``numpyro.contrib.funsor``'s
``enum`` handler lays it), so every factor downstream of it is a table over its values. The
model's log density with the site summed out is then a sum-product: for the sites of one
connected group (factors that share enumeration dimensions) and the plates ``P`` those sites are
in, each factor is first summed over the plates that none of its sites is in (independent
datapoints multiply); then the sites are eliminated one at a time, those of the innermost plates
first and otherwise in the order they were sampled (the factors that touch a site are added, its
dimension is log-sum-exp'd away, and the result is summed over the plates its remaining sites
are not in), and the rest is summed over its plates. Sites at different plate levels that depend
on each other (a global regime and each datapoint's state) are summed exactly this way, provided
their plates are nested. Each datapoint's variable is summed independently: the cost is ``K·N``,
not ``K^N``; a chain of sites (a ``markov`` loop) costs ``K²`` per step, not ``K^T``.

References:
  Obermeyer, Bingham, Jankowiak, Chen, Pradhan & Goodman, "Tensor Variable Elimination for
  Plated Factor Graphs", ICML 2019.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax.scipy.special import logsumexp


class Factor(NamedTuple):
    """One site's log density as a table: enumeration dims left of ``-nesting``, plates right."""

    name: str
    log_density: jnp.ndarray  # unscaled, with every batch dimension kept
    scale: object  # numpyro's scale of the site (a plate's size/subsample_size), or None


class Variable(NamedTuple):
    """An enumerated site: the dimension its values lie along and the plates it is in."""

    name: str
    dim: int  # negative, left of every plate dimension
    plates: frozenset  # the (negative) plate dimensions of its own distribution


def enum_dims(table, nesting: int) -> frozenset:
    """The enumeration dimensions a table varies along (those left of the plates)."""
    shape = jnp.shape(table)
    return frozenset(d for d in range(-len(shape), -nesting) if shape[d] != 1)


def _scaled(value, scale):
    return value if scale is None else scale * value


def _scale_value(scale):
    if scale is None:
        return 1.0
    try:
        return float(scale)
    except TypeError:  # a traced or array scale: compared by identity
        return id(scale)


def _sum_over(table, dims):
    dims = tuple(d for d in dims if -jnp.ndim(table) <= d)
    return jnp.sum(table, axis=dims, keepdims=True) if dims else table


def contract(factors, variables, nesting: int, error):
    """``log Σ_{enumerated values} Π factors``, summed over every plate: a scalar.

    ``error(message)`` builds the exception for a structure this elimination does not take.
    """
    by_dim = {v.dim: v for v in variables}
    groups: list[tuple[set, list]] = []  # (enumeration dims, factors), connected by shared dims
    total = jnp.zeros(())
    for factor in factors:
        dims = set(enum_dims(factor.log_density, nesting))
        if not dims:
            total = total + jnp.sum(_scaled(factor.log_density, factor.scale))
            continue
        joined = [g for g in groups if g[0] & dims]
        merged = (dims.union(*(g[0] for g in joined)), [f for g in joined for f in g[1]])
        merged[1].append(factor)
        groups = [g for g in groups if not g[0] & dims] + [merged]
    for dims, members in groups:
        names = sorted(by_dim[d].name for d in dims)
        levels = sorted({by_dim[d].plates for d in dims}, key=len)
        if any(not outer <= inner for outer, inner in zip(levels, levels[1:], strict=False)):
            raise error(
                f"the enumerated sites {names} depend on each other but sit in plates that are "
                f"not nested ({[sorted(p) for p in levels]}); summing them needs each site's "
                "plates to contain those of the sites it depends on. Give some of them a guide, "
                "or nest the plates."
            )
        if len({_scale_value(f.scale) for f in members}) != 1:
            raise error(
                f"the factors of the enumerated sites {names} have different scales (sites "
                f"{[f.name for f in members]}); an enumerated sum needs one scale for all the "
                "sites it touches. Subsample every plate around them, or none."
            )

        def reduced(table):
            # Multiplies out (sums the logs over) the plates that none of the sites the table
            # still depends on is in: independent datapoints given those sites.
            keep = frozenset().union(*(by_dim[d].plates for d in enum_dims(table, nesting)))
            return _sum_over(table, [d for d in range(-nesting, 0) if d not in keep])

        tables = [reduced(f.log_density) for f in members]
        # One site at a time: the innermost plates' sites first (each datapoint's own), then in
        # the order the model sampled them, so a chain (a markov loop) never holds more than two
        # states' table and costs time linear in its length.
        for variable in sorted((v for v in variables if v.dim in dims),
                               key=lambda v: -len(v.plates)):
            touching = [t for t in tables if variable.dim in enum_dims(t, nesting)]
            tables = [t for t in tables if variable.dim not in enum_dims(t, nesting)]
            tables.append(reduced(logsumexp(sum(touching), axis=variable.dim, keepdims=True)))
        total = total + jnp.sum(_scaled(sum(tables), members[0].scale))
    return total


__all__ = ["Factor", "Variable", "contract", "enum_dims"]
