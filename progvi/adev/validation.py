"""`pv.validation()`: check the parameters of every distribution sampled, at run time.

numpyro's own ``validate_args`` checks concrete values only; inside `jax.jit` (where progvi
programs always run) a scale of -1 or a probability of 1.5 goes through and gives NaN or a wrong
value with no error. Inside ``with pv.validation():`` every sample site that is traced checks its
distribution's parameters against their ``arg_constraints`` when the compiled program runs, and
raises a `ValidationError` naming the site, the parameter and its bad value.

The check is the equinox ``error_if`` pattern: a `jax.pure_callback` receives each parameter and
whether it satisfies its constraint, raises on the host if one does not, and otherwise returns a
zero that is added to the distribution's leaves, so that XLA cannot drop the check. The callback
is vectorized (``vmap_method="broadcast_all"``: one call for a whole batch) and receives values
without tangents, so it works under `jax.jit`, `jax.vmap` and `jax.grad`. Under `jax.jit` the error
reaches the caller as a `jax.errors.JaxRuntimeError` whose message holds the `ValidationError`;
`Expectation.estimate`, `grad` and the other entry points re-raise it as the `ValidationError`
itself.

The flag is read when a program is traced (a `contextvars.ContextVar`, no global state): the
entry points of `Expectation` and `pv.fit` keep one compiled function per setting, but a function
you compiled yourself with `jax.jit` before entering the block keeps the setting it was compiled
with.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from .errors import ValidationError

_VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "progvi_validation", default=False
)


@contextlib.contextmanager
def validation(enabled: bool = True) -> Iterator[None]:
    """Within the block, programs traced check their distributions' parameters at run time.

    Each sample site (in expectation programs and in generative functions) checks every
    parameter of its distribution against the distribution's ``arg_constraints`` (a scale must be
    positive, a probability in [0, 1], ...) when the compiled program runs, under `jax.jit`,
    `jax.vmap` and `jax.grad`, and raises a `pv.ValidationError` naming the site, the parameter
    and its first bad value. It costs one host callback per site and call, so it is meant for
    tests and debugging; values and gradients stay the same up to rounding (XLA may fuse the
    operations around a check differently). ``pv.validation(False)`` turns it off inside an
    enclosing block.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def draw(scale):
      ...     return pv.sample("x", dist.Normal(0.0, scale))
      >>> with pv.validation():
      ...     try:
      ...         draw.estimate(jax.random.key(0), -1.0)
      ...     except pv.ValidationError as err:
      ...         print(str(err).split(":")[0])
      sample site 'x'
    """
    token = _VALIDATING.set(bool(enabled))
    try:
        yield
    finally:
        _VALIDATING.reset(token)


def validating() -> bool:
    """Whether programs traced now check their parameters (inside `validation()`)."""
    return _VALIDATING.get()


def _arguments(dist, prefix=""):
    """``(name, constraint, value)`` for each checkable parameter, wrapped distributions too."""
    get_args = getattr(dist, "get_args", None)
    if get_args is not None:
        for name, value in get_args().items():
            constraint = dist.arg_constraints.get(name)
            if constraint is None or constraints.is_dependent(constraint):
                continue
            yield f"{prefix}{name}", constraint, value
    base = getattr(dist, "base_dist", None)
    if base is not None:
        yield from _arguments(base, f"{prefix}base_dist.")


def _fix(constraint) -> str:
    """How to keep a parameter inside `constraint`, for the common constraints."""
    if isinstance(constraint, constraints._Interval):
        if constraint is constraints.unit_interval:
            return ("Keep it in [0, 1]: compute it as jax.nn.sigmoid(raw) of an unconstrained "
                    "parameter, or pass logits= instead of probs=.")
        return f"Keep it inside {constraint}, e.g. low + (high - low) * jax.nn.sigmoid(raw)."
    if isinstance(constraint, constraints._GreaterThan):
        return ("Keep it positive: compute it as jnp.exp(raw) or jax.nn.softplus(raw) of an "
                "unconstrained parameter.")
    if constraint is constraints.simplex:
        return ("Keep it on the simplex: compute it as jax.nn.softmax(raw), or pass logits= "
                "instead of probs=.")
    if constraint is constraints.real:
        return "It must be finite: look for a division by zero or an overflow before the site."
    return f"Keep it inside {constraint}."


def validated(address: str, dist, where: str = "sample site"):
    """`dist`, its parameters checked: now if they are known, else when the program runs.

    A parameter known when the program is traced (a Python number, a constant array) is checked
    at once; the others go to one run-time check whose output is tied to the distribution's
    traced leaves (see the module doc). Known leaves stay untouched, so values that must be
    static (a Binomial's `total_count`, for enumeration) stay static.
    """
    label = f"{where} {address!r}: {type(dist).__name__}"
    traced = []
    for name, constraint, value in _arguments(dist):
        value = jax.lax.stop_gradient(jnp.asarray(value))
        with jax.ensure_compile_time_eval():
            ok = jnp.asarray(constraint(value))
        if isinstance(ok, jax.core.Tracer):
            traced.append((name, constraint, value, ok))
        else:
            _check(label, name, constraint, np.asarray(ok), np.asarray(value))
    leaves, tree = jax.tree.flatten(dist)
    live = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.core.Tracer)]
    if not traced or not live:
        return dist
    rank = jnp.ndim(traced[0][3])

    def host(*arrays):
        oks, values = arrays[: len(traced)], arrays[len(traced):]
        # broadcast_all: every array carries the same leading batch axes (none outside vmap).
        for (name, constraint, _, _), ok, value in zip(traced, oks, values, strict=True):
            _check(label, name, constraint, np.asarray(ok), np.asarray(value))
        return np.zeros(np.shape(oks[0])[: np.ndim(oks[0]) - rank], np.float32)

    zero = jax.pure_callback(
        host, jax.ShapeDtypeStruct((), jnp.float32), *[t[3] for t in traced],
        *[t[2] for t in traced], vmap_method="broadcast_all",
    )
    leaves = [_tie(leaf, zero) if i in live else leaf for i, leaf in enumerate(leaves)]
    return jax.tree.unflatten(tree, leaves)


def _check(label, name, constraint, ok, value) -> None:
    if ok.all():
        return
    index = np.unravel_index(np.argmin(ok), ok.shape)
    at = f" (at index {tuple(int(i) for i in index)})" if ok.ndim else ""
    raise ValidationError(
        f"{label} got {name}={np.broadcast_to(value, ok.shape + value.shape[ok.ndim:])[index]}"
        f"{at}, outside its constraint {constraint}. {_fix(constraint)}"
    )


def _tie(leaf, zero):
    """`leaf` made to depend on the check's output, so that XLA keeps the check."""
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return _tie_float(leaf, zero.astype(leaf.dtype))
    if leaf.dtype == jnp.bool_:
        return jnp.logical_or(leaf, zero.astype(bool))
    if jnp.issubdtype(leaf.dtype, jnp.number):
        return leaf + zero.astype(leaf.dtype)
    return leaf


@jax.custom_jvp
def _tie_float(leaf, zero):
    return leaf + zero


@_tie_float.defjvp
def _tie_float_jvp(primals, tangents):
    # The tangent depends on the check too (a factor of exactly 1, linear in the tangent): a
    # gradient that needs only the tangent of a parameter, such as d(scale * eps)/d scale, keeps
    # the check alive when XLA drops the primal value.
    leaf, zero = primals
    return leaf + zero, tangents[0] * (1 + zero)


_MESSAGE = re.compile(r"ValidationError: (.+)")


def reraise(error: Exception) -> None:
    """Raises the `ValidationError` inside a runtime error of a compiled program, if one is."""
    found = _MESSAGE.findall(str(error))
    if found:
        raise ValidationError(found[-1]) from None


__all__ = ["ValidationError", "validated", "validating", "validation"]
