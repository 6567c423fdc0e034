"""Choice maps: nested dicts of arrays, their addresses, and the checks on values given for them."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..adev.strategy import dist_name
from .errors import ChoiceError


def site_key(key, address: str):
    """The key of the choice at `address`: derived from the address, so not from call order.

    Deriving it from the address makes `generate` with no constraints draw exactly what
    `simulate` draws from the same key, whatever the constraints change.
    """
    return jax.random.fold_in(key, zlib.crc32(address.encode()))


def merge(*choice_maps: Mapping) -> dict:
    """Merges choice maps into one nested dict; an address given twice is an error.

    Args:
      *choice_maps: nested dicts from addresses to values (or to the choices of nested calls).

    Returns:
      A new nested dict holding every address of every map.

    Examples:
      >>> import progvi as pv
      >>> pv.merge({"enc": {"z": 1.0}}, {"enc": {"w": 2.0}, "x": 3.0})
      {'enc': {'z': 1.0, 'w': 2.0}, 'x': 3.0}
    """
    out: dict = {}
    for i, choices in enumerate(choice_maps):
        if not isinstance(choices, Mapping):
            raise TypeError(
                f"pv.merge: argument {i} is a {type(choices).__name__}, not a choice map. Pass "
                'nested dicts such as {"z": 0.5, "enc": {"h": 1.0}}.'
            )
        _merge_into(out, choices, "")
    return out


def _merge_into(out: dict, choices: Mapping, prefix: str) -> None:
    for name, value in choices.items():
        address = f"{prefix}{name}"
        if name not in out:
            out[name] = _copy(value)
        elif isinstance(out[name], dict) and isinstance(value, Mapping):
            _merge_into(out[name], value, f"{address}/")
        else:
            raise ChoiceError(
                lambda a: f"pv.merge: two choice maps give a value at {a!r}. Keep one of them "
                "(remove the address from the other map).",
                address,
            )


def _copy(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def paths(choices: Any) -> list[tuple[str, Any]]:
    """The (slash-joined address, value) pairs of a choice map's leaves."""
    flat, _ = jax.tree_util.tree_flatten_with_path(choices)
    return [("/".join(str(getattr(k, "key", k)) for k in path), leaf) for path, leaf in flat]


def addresses_of(gen_fn, *args) -> set[str] | None:
    """The slash-joined addresses of `gen_fn`'s choices at `args`, or None if not found.

    Found by tracing ``gen_fn.simulate`` abstractly (nothing runs), for error messages that
    compare what two functions sample: call it on error paths only.
    """
    try:
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
                              args)
        trace = jax.eval_shape(lambda a: gen_fn.simulate(jax.random.key(0), *a), shapes)
        return {address for address, _ in paths(trace.choices)}
    except Exception:  # noqa: BLE001  (only a better message is lost)
        return None


def choice_value(address: str, dist, value: Any, sample_shape: tuple = ()) -> jax.Array:
    """`value` as an array for the distribution at `address`; raises on a shape or dtype mismatch.

    Python numbers are converted (an integral float is accepted for a discrete distribution);
    arrays must already have the right kind of dtype, since a silent cast could change them.
    """
    if isinstance(value, Mapping):
        raise ChoiceError(
            lambda a: f"the value given at {a!r} is a dict, but {a!r} is drawn from a "
            f"{dist_name(dist)}, which needs one array. Give the array itself.",
            address,
        )
    discrete = dist.support.is_discrete
    kind = "integer" if discrete else "floating-point"
    if isinstance(value, bool | int | float):
        if discrete and isinstance(value, float) and not value.is_integer():
            raise ChoiceError(
                lambda a: f"the value {value} given at {a!r} is not an integer, but "
                f"{dist_name(dist)} is discrete. Give an integer value.",
                address,
            )
        value = jnp.asarray(value, jnp.result_type(int if discrete else float))
    else:
        value = jnp.asarray(value)
        ok = (
            jnp.issubdtype(value.dtype, jnp.integer) or value.dtype == jnp.bool_
            if discrete
            else jnp.issubdtype(value.dtype, jnp.floating)
        )
        if not ok:
            fix = "value.astype(jnp.int32)" if discrete else "value.astype(jnp.float32)"
            raise ChoiceError(
                lambda a: f"the value given at {a!r} has dtype {value.dtype}, but "
                f"{dist_name(dist)} draws {kind} values. Convert it, e.g. {fix}.",
                address,
            )
    expected = tuple(dist.shape(sample_shape))
    if value.shape != expected:
        raise ChoiceError(
            lambda a: f"the value given at {a!r} has shape {value.shape}, but "
            f"{dist_name(dist)} there draws values of shape {expected} (batch shape "
            f"{dist.batch_shape}, event shape {dist.event_shape}). Give a value of shape "
            f"{expected}.",
            address,
        )
    return value


def check_finite(address: str, log_density) -> None:
    """Raises if a concrete log density is not finite; traced values (under jit) pass unchecked."""
    if isinstance(log_density, jax.core.Tracer):
        return
    if not bool(jnp.isfinite(log_density)):
        raise ChoiceError(
            lambda a: f"the log density of the value at {a!r} is {float(log_density)}: the value "
            "is outside the support of its distribution (or a parameter is invalid there). "
            "Give a value inside the support.",
            address,
        )


def check_batched(choices: Any, size: int, where: str, per: str) -> None:
    """Raises unless every leaf of `choices` has a leading axis of `size` (one entry per `per`)."""
    for address, leaf in paths(choices):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != size:
            raise ChoiceError(
                lambda a, shape=shape: f"{where}: the value at {a!r} has shape {shape}, but it "
                f"needs a leading axis of size {size}, one entry per {per}.",
                address,
            )


def missing(address: str, gen_name: str) -> ChoiceError:
    return ChoiceError(
        lambda a: f"no value is given at {a!r}, which {gen_name} samples. Add it to the "
        "choices (assess and density need a value for every choice; use generate to sample "
        "the ones you leave out).",
        address,
    )


def extra(address: str, gen_name: str, known) -> ChoiceError:
    return ChoiceError(
        lambda a: f"a value is given at {a!r}, but {gen_name} samples no such address (it "
        f"samples {sorted(known)}). Remove it or correct its spelling.",
        address,
    )
