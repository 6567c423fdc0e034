"""Non-array leaves of parameters (an equinox module's activation functions) kept out of JAX's way.

An equinox module is a pytree whose leaves include its functions (``jax.nn.relu``), which
`jax.jit`, `jax.grad`, `lax.scan` and optax cannot take. `hide` wraps each such leaf in `Static`,
a pytree node with no children whose value travels in the tree's structure (as
``equinox.partition`` / ``combine`` would split and join it, but in one object): the wrapped tree
has only arrays as leaves and goes through every transformation, and `Static` calls its value,
so a module whose activation is wrapped still runs. `reveal` unwraps; `strip` turns the wrapped
leaves of a gradient into None (equinox's convention for "no gradient here"). flax.nnx modules
are pytrees whose non-array attributes are already in their structure, and pass unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Static:
    """A non-array leaf held in the pytree structure; calling it calls the value."""

    value: Any

    def __call__(self, *args, **kwargs):
        return self.value(*args, **kwargs)


def _hidden(leaf) -> bool:
    # Functions, methods, classes and other callables; arrays and numbers stay leaves.
    return callable(leaf) and not isinstance(leaf, jax.Array | Static)


def hide(tree):
    """`tree` with every callable leaf wrapped in `Static`."""
    return jax.tree.map(lambda x: Static(x) if _hidden(x) else x, tree)


def _is_static(x) -> bool:
    return isinstance(x, Static)


def reveal(tree):
    """`tree` with every `Static` replaced by its value."""
    return jax.tree.map(lambda x: x.value if _is_static(x) else x, tree, is_leaf=_is_static)


def strip(tree):
    """`tree` with every `Static` replaced by None (the gradient of a non-array leaf)."""
    return jax.tree.map(lambda x: None if _is_static(x) else x, tree, is_leaf=_is_static)


__all__ = ["Static", "hide", "reveal", "strip"]
