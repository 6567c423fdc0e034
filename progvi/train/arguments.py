"""The checks of `fit`'s arguments that need no tracing, made before anything runs."""

from __future__ import annotations

from ..adev.keys import check_key
from ..adev.static import hide
from .step import check_params


def check_arguments(key, params, resume, extra_args, callback, **counts):
    """The key, the params, the counts (Python ints), extra_args (a tuple), the callback."""
    check_key(key, "pv.fit(key, objective, params, optimizer, ...)",
              "pv.fit(jax.random.key(0), objective, params, optimizer, direction=..., ...)")
    if params is not None and resume is None:
        check_params(hide(params), "fit")
    for name, count in counts.items():
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(
                f"fit: {name}={count!r} is a {type(count).__name__}, but it must be a Python "
                f"int (a number of steps or datapoints fixed at compile time), e.g. "
                f"{name}={_int_example(count)}."
            )
    if not isinstance(extra_args, tuple):
        raise TypeError(
            f"fit: extra_args is a {type(extra_args).__name__}, but it must be the tuple of "
            "further arguments of the program: extra_args=(value,) for one."
        )
    if callback is not None and not callable(callback):
        raise TypeError(
            f"fit: callback={callback!r} is not callable; pass a function "
            "callback(step, state, value) (return True from it to stop)."
        )


def _int_example(count) -> int:
    try:
        return max(1, int(count))
    except (TypeError, ValueError):
        return 100


def resolve_batch_size(batch_size, num_data):
    """The batch size to use: all the data when none is given; None without data."""
    if num_data is None:
        if batch_size is not None:
            raise ValueError("fit: batch_size was given without data; pass data=your_array.")
        return None
    if batch_size is None:
        return num_data
    if not 1 <= batch_size <= num_data:
        raise ValueError(
            f"fit: batch_size={batch_size!r} must be between 1 and the number of datapoints, "
            f"{num_data}."
        )
    return batch_size


def num_steps_of(num_steps, num_epochs, num_data, batch_size):
    """The number of steps, from exactly one of num_steps and num_epochs."""
    if (num_steps is None) == (num_epochs is None):
        raise ValueError(
            "fit: give exactly one of num_steps=... and num_epochs=... (got "
            f"num_steps={num_steps!r}, num_epochs={num_epochs!r})."
        )
    if num_epochs is not None:
        if num_data is None:
            raise ValueError("fit: num_epochs needs data; without data, pass num_steps.")
        num_steps = num_epochs * (num_data // batch_size)
    if num_steps < 0:
        raise ValueError(f"fit: num_steps={num_steps!r} must not be negative.")
    return num_steps
