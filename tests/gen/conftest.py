"""Statistical helpers for the generative-function tests.

An estimator is unbiased when the mean of many independent estimates (one key each, vmapped and
jitted) matches an exact answer within four standard errors; the estimates must vary, so a test
cannot pass because an estimator is constant.
"""

import jax
import numpy as np
import pytest

Z_MAX = 4.0


def draws(fn, seed, num):
    """``fn(key)`` for ``num`` independent keys, as float64 numpy leaves."""
    keys = jax.random.split(jax.random.key(seed), num)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.jit(jax.vmap(fn))(keys))


def check_unbiased(samples, exact):
    """Asserts that each leaf's mean over the leading axis is within Z_MAX SE of `exact`."""
    sample_leaves, sample_tree = jax.tree.flatten(samples)
    exact_leaves, exact_tree = jax.tree.flatten(exact)
    assert sample_tree == exact_tree, f"structure {sample_tree} != {exact_tree}"
    for leaf, target in zip(sample_leaves, exact_leaves, strict=True):
        target = np.asarray(target, np.float64)
        assert leaf.shape[1:] == target.shape
        mean, sem = leaf.mean(0), leaf.std(0, ddof=1) / np.sqrt(leaf.shape[0])
        assert np.all(sem > 1e-6), "the estimates do not vary, so the test has no power"
        z = (mean - target) / sem
        assert np.all(np.abs(z) < Z_MAX), f"mean {mean} vs exact {target}: z = {z}"


class Stats:
    draws = staticmethod(draws)
    check_unbiased = staticmethod(check_unbiased)


@pytest.fixture
def stats():
    """Sampling and unbiasedness helpers."""
    return Stats
