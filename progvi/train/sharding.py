"""Data parallelism: the batch's leading axis sharded over devices, through `jax.sharding`.

progvi adds no communication of its own. A training step constrains its batch to a sharding
whose leading (datapoint) axis is split over a mesh; params stay replicated; XLA partitions the
per-datapoint estimates over the devices and inserts the all-reduces of the mean and of the
gradient. The same program runs on one device or many, on one host or several
(`jax.distributed`).
"""

from __future__ import annotations

import math

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def data_sharding(sharding) -> NamedSharding | None:
    """The sharding of a batch: a `NamedSharding` as given, or the leading axis over a `Mesh`."""
    if sharding is None or isinstance(sharding, NamedSharding):
        return sharding
    if isinstance(sharding, Mesh):
        return NamedSharding(sharding, PartitionSpec(tuple(sharding.axis_names)))
    raise TypeError(
        f"sharding={sharding!r}; it must be a jax.sharding.Mesh (the batch's leading axis is "
        "split over all its devices) or a jax.sharding.NamedSharding for the batch, e.g. "
        'NamedSharding(mesh, PartitionSpec("batch")).'
    )


def num_shards(sharding: NamedSharding) -> int:
    """How many pieces the leading axis is split into."""
    spec = sharding.spec
    first = spec[0] if len(spec) else None
    if first is None:
        return 1
    names = first if isinstance(first, tuple) else (first,)
    return math.prod(sharding.mesh.shape[name] for name in names)


def check_batch_size(sharding: NamedSharding | None, batch_size: int | None, caller: str):
    if sharding is None or batch_size is None:
        return
    pieces = num_shards(sharding)
    if batch_size % pieces:
        raise ValueError(
            f"{caller}: the batch of {batch_size} datapoints cannot be split evenly over the "
            f"{pieces} devices of the sharding's leading axis. Use a batch_size that is a "
            f"multiple of {pieces}, e.g. {pieces * max(1, batch_size // pieces)}."
        )


def constrain(batch, sharding: NamedSharding | None, caller: str = "make_step"):
    """`batch` with its leading axis laid out by `sharding` (inside a traced step)."""
    if sharding is None or batch is None:
        return batch
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(batch) if leaf.ndim}
    for size in sizes:
        check_batch_size(sharding, size, caller)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), batch)


__all__ = ["check_batch_size", "constrain", "data_sharding", "num_shards"]
