"""Shared statistical helpers for the ADEV tests, offered as fixtures.

Unbiasedness is checked by comparing the mean of many independent estimates (one per key, vmapped
and jitted) with an exact answer computed independently in float64 numpy/scipy: a closed form, a
sum over a (truncated) support or a quadrature, differentiated by a fourth-order central
difference. Each component must satisfy ``|mean - exact| < 4 * standard error``, and the estimates
must have real variance, so a zero-variance estimator cannot pass a statistical test vacuously.
"""

import jax
import numpy as np
import pytest

Z_MAX = 4.0


def sample_grads(program, seed, num, *args, argnums=0):
    """``num`` gradient estimates of `program` at `args`, one per key, as float64 numpy leaves."""
    keys = jax.random.split(jax.random.key(seed), num)
    grads = jax.jit(jax.vmap(lambda k: program.grad(k, *args, argnums=argnums)))(keys)
    return jax.tree.map(lambda g: np.asarray(g, np.float64), grads)


def sample_value_and_grads(program, seed, num, *args, argnums=0):
    """``num`` pairs (estimate, gradient estimate) of `program`, each pair from one key."""
    keys = jax.random.split(jax.random.key(seed), num)
    out = jax.jit(jax.vmap(lambda k: program.value_and_grad(k, *args, argnums=argnums)))(keys)
    return jax.tree.map(lambda g: np.asarray(g, np.float64), out)


def sample_estimates(program, seed, num, *args):
    """``num`` estimates of the expectation of `program` at `args`, one per key."""
    keys = jax.random.split(jax.random.key(seed), num)
    return np.asarray(jax.jit(jax.vmap(lambda k: program.estimate(k, *args)))(keys), np.float64)


def numerical_grad(fn, params, step=1e-3):
    """The gradient of a float64 function of a pytree of parameters, by a five-point stencil.

    The truncation error is O(step**4) and the rounding error O(1e-16 / step): about 1e-12 for
    smooth closed forms, far below any standard error the tests use.
    """
    leaves, treedef = jax.tree.flatten(params)
    leaves = [np.array(leaf, np.float64) for leaf in leaves]
    grads = []
    for i, leaf in enumerate(leaves):
        grad = np.zeros_like(leaf)
        for index in np.ndindex(leaf.shape):

            def moved(delta, i=i, index=index):
                shifted = [x.copy() for x in leaves]
                shifted[i][index] += delta
                return fn(jax.tree.unflatten(treedef, shifted))

            grad[index] = (
                -moved(2 * step) + 8 * moved(step) - 8 * moved(-step) + moved(-2 * step)
            ) / (12 * step)
        grads.append(grad)
    return jax.tree.unflatten(treedef, grads)


def check_unbiased(samples, exact, z_max=Z_MAX):
    """Asserts that the mean of `samples` (leading axis: draws) matches `exact` within z_max SE.

    Both are pytrees of the same structure. Every component must vary across draws.
    """
    sample_leaves, sample_tree = jax.tree.flatten(samples)
    exact_leaves, exact_tree = jax.tree.flatten(exact)
    assert sample_tree == exact_tree, f"structure {sample_tree} != {exact_tree}"
    for path, draws, target in zip(_paths(samples), sample_leaves, exact_leaves, strict=True):
        draws = np.asarray(draws, np.float64)
        target = np.asarray(target, np.float64)
        assert draws.shape[1:] == target.shape, f"{path}: shape {draws.shape} vs {target.shape}"
        assert np.all(np.isfinite(draws)), f"{path}: non-finite estimates"
        num = draws.shape[0]
        mean, std = draws.mean(0), draws.std(0, ddof=1)
        assert np.all(std > 1e-4 * (1.0 + np.abs(target))), (
            f"{path}: the estimates have no variance (std {std}), so the test has no power; "
            "use an objective on which the estimator is random"
        )
        z = (mean - target) / (std / np.sqrt(num))
        assert np.all(np.abs(z) < z_max), (
            f"{path}: mean {mean} differs from exact {target} by z = {z} "
            f"(standard error {std / np.sqrt(num)}, {num} draws)"
        )


def check_exact(value, exact, rtol=2e-5, atol=2e-6):
    """Asserts equality up to float32 rounding, leaf by leaf."""
    value_leaves, value_tree = jax.tree.flatten(value)
    exact_leaves, exact_tree = jax.tree.flatten(exact)
    assert value_tree == exact_tree, f"structure {value_tree} != {exact_tree}"
    for v, e in zip(value_leaves, exact_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(v, np.float64), e, rtol=rtol, atol=atol)


def _paths(tree):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [jax.tree_util.keystr(path) or "value" for path, _ in leaves]


class Stats:
    """The helpers above, bundled so that tests receive them through one fixture."""

    sample_grads = staticmethod(sample_grads)
    sample_value_and_grads = staticmethod(sample_value_and_grads)
    sample_estimates = staticmethod(sample_estimates)
    numerical_grad = staticmethod(numerical_grad)
    check_unbiased = staticmethod(check_unbiased)
    check_exact = staticmethod(check_exact)


@pytest.fixture
def stats():
    """Sampling, exact-gradient and comparison helpers for statistical tests."""
    return Stats
