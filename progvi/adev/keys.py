"""The check that a function's first argument is a `jax.random` key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_key(key) -> bool:
    """Whether `key` is a typed key (`jax.random.key`) or a raw one (`jax.random.PRNGKey`)."""
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == np.uint32 and np.shape(key)[-1:] == (2,)


def shown(value) -> str:
    """A short description of `value` for messages: a number itself, an array by shape."""
    if isinstance(value, bool | int | float):
        return f"the {type(value).__name__} {value!r}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    return f"a {type(value).__name__}"


def check_key(key, call: str, example: str) -> None:
    """Raises a `TypeError` unless `key` is a key; `call` names the call, `example` the fix."""
    if is_key(key):
        return
    dtype = getattr(key, "dtype", None)
    seed_like = isinstance(key, int) or (dtype is not None and jnp.issubdtype(dtype, jnp.integer))
    hint = "" if seed_like else (
        " It looks like the key was left out: the first argument is taken as the key and the "
        "other arguments follow it."
    )
    raise TypeError(
        f"{call}: the key is {shown(key)}, not a jax.random key.{hint} Call {example} (and "
        "split a key per call: jax.random.split(key))."
    )
