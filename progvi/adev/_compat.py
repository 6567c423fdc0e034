"""Every use of JAX internals in progvi goes through this module.

JAX's interpreter-facing API moves between releases; keeping the imports here means one file to
update when it does.
"""

from jax._src.interpreters import batching as _batching
from jax.core import ShapedArray  # noqa: F401
from jax.custom_derivatives import SymbolicZero  # noqa: F401
from jax.extend.core import (  # noqa: F401
    ClosedJaxpr,
    Jaxpr,
    Literal,
    Primitive,
    get_opaque_trace_state,
    jaxpr_as_fun,
)
from jax.interpreters import batching  # noqa: F401


def bind_equation(eqn, invals):
    """Re-binds one jaxpr equation on new inputs; always returns a list of outputs."""
    params = eqn.primitive.get_bind_params(eqn.params)
    out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def is_batched(value) -> bool:
    """Whether `value` is batched by an enclosing `jax.vmap` (mapped along some axis)."""
    return (isinstance(value, _batching.BatchTracer)
            and isinstance(value.batch_dim, int))


def sub_jaxprs(eqn):
    """The closed or open jaxprs an equation carries in its params (branches, bodies, calls)."""
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, Jaxpr):
                yield item


def scan_parts(eqn, values):
    """Splits a scan equation's inputs into (consts, carry, xs), each a list."""
    consts, carry, xs = eqn.params["ft_in"].update(list(values)).unpack()
    return list(consts), list(carry), list(xs)


def hoist_consts(closed):
    """An open jaxpr whose inputs are the closed jaxpr's constants, then its inputs."""
    jaxpr = closed.jaxpr
    return jaxpr.replace(constvars=[], invars=[*jaxpr.constvars, *jaxpr.invars])
