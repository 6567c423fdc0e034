"""The `sample_p` primitive: a sample site as one equation of a jaxpr.

Its operands are the leaves of ``(distribution, strategy, batch)`` (``batch``: the indices of the
`independent` blocks around the site, only there to make the site batched); its params the
address, the treedef and the vmap levels the site was batched by (each a tuple of per-operand axes
and a size). It has no key operand: the interpreter derives every site's key from the program's
key.
"""

import jax

from ._compat import Primitive, ShapedArray, batching
from .errors import SampleOutsideProgramError

sample_p = Primitive("progvi_sample")
_KEY_SHAPE = jax.eval_shape(lambda: jax.random.key(0))


def unflatten(treedef, leaves):
    return jax.tree_util.tree_unflatten(treedef, list(leaves))


def lift(fn, levels):
    """Vmaps ``fn(key, leaves, tangents)`` over a site's vmap levels, each with its own keys."""
    for axes, size in levels:
        fn = _vmap_level(fn, axes, size)
    return fn


def _vmap_level(fn, axes, size):
    def lifted(key, leaves, tangents):
        keys = jax.random.split(key, size)
        return jax.vmap(fn, in_axes=(0, list(axes), list(axes)))(keys, leaves, tangents)

    return lifted


def _abstract_eval(*avals, address, treedef, levels):
    def draw(key, leaves, _):
        return unflatten(treedef, leaves)[0].sample(key)

    out = jax.eval_shape(lift(draw, levels), _KEY_SHAPE, list(avals), list(avals))
    return ShapedArray(out.shape, out.dtype)


def _impl(*args, address, treedef, levels):
    raise SampleOutsideProgramError(
        f"sample site {address!r} was evaluated outside an expectation program. Call "
        "obj.estimate(key, ...) on the @pv.expectation that contains it. (A function jitted "
        "separately and cached by JAX can also carry a site out of its program: do not wrap "
        "code that calls pv.sample in its own jax.jit.)"
    )


def _batch(args, dims, *, address, treedef, levels):
    # Unbatched operands have dimension None.
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    axes = tuple(dims)
    out = sample_p.bind(*args, address=address, treedef=treedef, levels=levels + ((axes, size),))
    return out, 0


sample_p.def_abstract_eval(_abstract_eval)
sample_p.def_impl(_impl)
batching.primitive_batchers[sample_p] = _batch


def bind_sample(address, dist, strategy, batch=()):
    leaves, treedef = jax.tree_util.tree_flatten((dist, strategy, batch))
    return sample_p.bind(*leaves, address=address, treedef=treedef, levels=())
