"""A conjugate Gaussian model whose posterior is known exactly, shared by the training tests.

z ~ N(0, 1), x_i | z ~ N(z, SIGMA^2) for N datapoints: the posterior is N(mean, sd^2) with
precision 1 + N / SIGMA^2 and mean sum(x) / SIGMA^2 / precision. The guide N(m, exp(log_s))
contains it, so maximizing the ELBO recovers it exactly.
"""

import contextlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest

import progvi as pv

N, SIGMA = 100, 2.0


class Conjugate(NamedTuple):
    data: jax.Array
    mean: float
    sd: float
    local_elbo: pv.Expectation  # per-datapoint ELBO / N: its batch mean is unbiased for ELBO / N
    local_negative_elbo: pv.Expectation


@pytest.fixture(scope="session")
def conjugate():
    data = 2.0 + SIGMA * jax.random.normal(jax.random.key(42), (N,))
    precision = 1.0 + N / SIGMA**2

    @pv.expectation
    def local_elbo(phi, x):
        q = dist.Normal(phi["m"], jnp.exp(phi["log_s"]))
        z = pv.sample("z", q)
        global_terms = dist.Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)
        return dist.Normal(z, SIGMA).log_prob(x) + global_terms / N

    @pv.expectation
    def local_negative_elbo(phi, x):
        return -local_elbo(phi, x)  # a nested program: its site is this program's site

    return Conjugate(
        data=data,
        mean=float(data.sum() / SIGMA**2 / precision),
        sd=float(precision**-0.5),
        local_elbo=local_elbo,
        local_negative_elbo=local_negative_elbo,
    )


@pytest.fixture
def count_compilations():
    """A context manager that collects the XLA compilations of its block, one entry each."""
    return _count_compilations


@contextlib.contextmanager
def _count_compilations():
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)

# Scripts run in their own processes by the tests (they set XLA_FLAGS before importing jax).
collect_ignore = ["scripts"]
