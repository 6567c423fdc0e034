"""Compile time of large programs: what XLA receives, and deep enumeration.

The interpreter evaluates each run of equations without sample sites under one `jax.jvp` and
derives every site's key in one vectorized `fold_in`; these tests check that values, gradients
and draws are unchanged by that, that the compiled program is no bigger than the same gradient
hand-written in JAX, and that sequential enumeration switches to the parallel form (with a
warning naming the site) before its exponential cost makes a program uncompilable.
"""

import contextlib
import itertools
import re
import time
import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats as scipy_stats

import progvi as pv
from progvi.adev.errors import StrategyError

KEY = jax.random.key(0)


# -- the interpreter: segments of equations and vectorized keys -----------------------------------


@jax.custom_jvp
def soft_clip(x):
    return jnp.tanh(x)


soft_clip.defjvp(lambda primals, tangents: (jnp.tanh(primals[0]),
                                            (1 - jnp.tanh(primals[0]) ** 2) * tangents[0]))


def _mixed_program(theta, mark):
    """Sites enumerated exactly, between runs of equations that mix live and dead inputs."""
    a, c = theta[0], theta[1]
    data = jnp.arange(3.0)  # no tangent: a dead input of the segments that read it
    scale = jnp.sum(data) + 1.0 + jnp.floor(a)  # an output whose tangent is zero
    count = jnp.int32(2) * jnp.sum(data > 0.5).astype(jnp.int32)  # integer: a float0 tangent
    b = mark("b", dist.Bernoulli(probs=jax.nn.sigmoid(a)))
    shifted = soft_clip(c * b + a) / scale + count
    # A cond without sites is a segment of its own.
    shifted = jax.lax.cond(b > 0, lambda x: x * 2.0, lambda x: x - 1.0, shifted)
    k = mark("k", dist.Categorical(probs=jax.nn.softmax(jnp.stack([a, c, a * c]))))
    return shifted * (k + 1.0) + jnp.sin(c) * count


def _exact_mixed(theta):
    """E[_mixed_program] by enumeration in float64 numpy."""
    a, c = np.asarray(theta, np.float64)
    scale = 4.0 + np.floor(a)
    count = 4
    p_b = 1 / (1 + np.exp(-a))
    logits = np.array([a, c, a * c])
    p_k = np.exp(logits - logits.max())
    p_k /= p_k.sum()
    total = 0.0
    for b, pb in [(0, 1 - p_b), (1, p_b)]:
        shifted = np.tanh(c * b + a) / scale + count
        shifted = shifted * 2.0 if b > 0 else shifted - 1.0
        for k in range(3):
            total += pb * p_k[k] * (shifted * (k + 1.0) + np.sin(c) * count)
    return total


@pytest.mark.parametrize("strategy", [pv.enum, pv.enum_parallel])
def test_segments_keep_values_and_gradients_exact(strategy, stats):
    @pv.expectation
    def program(theta):
        return _mixed_program(theta, lambda name, d: pv.sample(name, d, strategy=strategy))

    theta = jnp.array([0.4, -0.7])
    value, grad = program.value_and_grad(KEY, theta)
    stats.check_exact(value, _exact_mixed(theta))
    stats.check_exact(grad, stats.numerical_grad(_exact_mixed, np.asarray(theta, np.float64)),
                      rtol=1e-4, atol=1e-5)


def test_reparameterized_chain_gradient_is_unbiased(stats):
    # z1 ~ N(m, e^s), z2 ~ N(0.5 z1 + m, 1): E[z2^2 + z1] = (0.5 m + m)^2 + 0.25 e^{2s} + 1 + m.
    @pv.expectation
    def program(theta):
        m, s = theta[0], theta[1]
        z1 = pv.sample("z1", dist.Normal(m, jnp.exp(s)))
        z2 = pv.sample("z2", dist.Normal(0.5 * z1 + m, 1.0))
        return z2**2 + z1

    def exact(theta):
        m, s = theta
        return (1.5 * m) ** 2 + 0.25 * np.exp(2 * s) + 1.0 + m

    theta = np.array([0.3, -0.2])
    stats.check_unbiased(stats.sample_grads(program, 1, 20_000, jnp.asarray(theta)),
                         stats.numerical_grad(exact, theta))


def test_each_site_draws_from_fold_in_of_its_address():
    # The vectorized key derivation gives each site the key a fold_in at the site would.
    addresses = ["z_0", "z_1", "enc/z"]

    @pv.expectation
    def program(m):
        return jnp.stack([pv.sample(a, dist.Normal(m, 1.0)) for a in addresses])

    draws = program.estimate(KEY, 0.0)
    expected = [jax.random.normal(jax.random.fold_in(KEY, zlib.crc32(a.encode()) & 0x7FFFFFFF))
                for a in addresses]
    np.testing.assert_array_equal(draws, jnp.stack(expected))


def _chain_gradients(n):
    """progvi's gradient of n reparameterized sites in a Python loop, and the hand-written one."""

    @pv.expectation
    def chain(params):
        x, total = 0.0, 0.0
        for i in range(n):
            z = pv.sample(f"z_{i}", dist.Normal(params[i, 0] + 0.5 * x, jnp.exp(params[i, 1])))
            x = jnp.tanh(z) + 0.1 * x
            total = total + x**2 - z
        return total

    def hand_written(params, key):
        keys = jax.random.split(key, n)
        x, total = 0.0, 0.0
        for i in range(n):
            z = params[i, 0] + 0.5 * x + jnp.exp(params[i, 1]) * jax.random.normal(keys[i])
            x = jnp.tanh(z) + 0.1 * x
            total = total + x**2 - z
        return total

    return (lambda key, p: jax.grad(lambda q: chain.estimate(key, q))(p),
            lambda key, p: jax.grad(hand_written)(p, key))


def _hlo_instructions(fn, *args):
    text = jax.jit(fn).lower(*args).compile().as_text()
    return sum(1 for line in text.splitlines() if re.match(r"\s*(ROOT )?%?[\w.\-]+ = ", line))


def _without_validation():
    # Run-time parameter checks (pv.validation, on in tests) add a host callback per site.
    return pv.validation(False) if hasattr(pv, "validation") else contextlib.nullcontext()


def test_compiled_program_is_no_bigger_than_hand_written_jax():
    # One threefry hash per site for its key (a fold_in at each site) made XLA compile a
    # quarter more code than the hand-written gradient, whose keys come from one split.
    n = 8
    ours, theirs = _chain_gradients(n)
    params = jnp.zeros((n, 2))
    with _without_validation():
        size = _hlo_instructions(ours, KEY, params)
    assert size <= 1.02 * _hlo_instructions(theirs, KEY, params)


# -- enumeration: the switch to the parallel form and the support limit ---------------------------


def _bernoulli_chain(depth, strategy):
    @pv.expectation
    def chain(theta):
        shift, total = 0.0, 0.0
        for i in range(depth):
            b = pv.sample(f"b_{i}", dist.Bernoulli(logits=theta[i] + shift), strategy=strategy)
            shift = 0.5 * b - 0.25
            total = total + b * theta[i] ** 2 + 0.1 * b
        return total

    return chain


def _exact_chain(theta):
    """E[_bernoulli_chain] by enumeration of every path, in float64 numpy."""
    theta = np.asarray(theta, np.float64)
    paths = np.array(list(itertools.product([0.0, 1.0], repeat=len(theta))))
    shifts = np.concatenate([np.zeros((len(paths), 1)), 0.5 * paths[:, :-1] - 0.25], axis=1)
    p = 1 / (1 + np.exp(-(theta + shifts)))
    probs = np.prod(np.where(paths > 0, p, 1 - p), axis=1)
    return np.sum(probs * np.sum(paths * (theta**2 + 0.1), axis=1))


def test_short_sequential_chains_stay_sequential_without_warning(stats):
    theta = jnp.linspace(0.3, 1.2, 4)  # 2^4 = 16 traced copies: the limit, not past it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = _bernoulli_chain(4, pv.enum).estimate(KEY, theta)
    stats.check_exact(value, _exact_chain(theta))


def test_sites_after_a_chosen_parallel_site_stay_sequential(stats):
    theta = jnp.linspace(0.3, 1.2, 4)

    @pv.expectation
    def chain(theta):
        shift, total = 0.0, 0.0
        for i in range(4):
            strategy = pv.enum_parallel if i == 0 else pv.enum
            b = pv.sample(f"b_{i}", dist.Bernoulli(logits=theta[i] + shift), strategy=strategy)
            shift = 0.5 * b - 0.25
            total = total + b * theta[i] ** 2 + 0.1 * b
        return total

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = chain.estimate(KEY, theta)
    stats.check_exact(value, _exact_chain(theta))


def test_deep_sequential_enumeration_switches_and_warns(stats):
    theta = jnp.linspace(0.3, 1.2, 6)
    program = _bernoulli_chain(6, pv.enum)
    with pytest.warns(UserWarning, match=r"sample site 'b_\d': pv\.enum runs in parallel .*"
                                         r"strategy=pv\.enum_parallel") as record:
        value, grad = program.value_and_grad(KEY, theta)
    messages = {re.search(r"sample site '(\w+)'", str(w.message)).group(1): str(w.message)
                for w in record}
    assert set(messages) == {f"b_{i}" for i in range(6)}
    assert "would trace the end of the program 64 times" in messages["b_0"]
    assert "it follows sample site 'b_0', which runs in parallel" in messages["b_5"]
    stats.check_exact(value, _exact_chain(theta))
    stats.check_exact(grad, stats.numerical_grad(_exact_chain, np.asarray(theta, np.float64)),
                      rtol=1e-4, atol=1e-5)


def test_a_large_support_switches_and_warns(stats):
    values = np.arange(41.0)

    @pv.expectation
    def program(t):
        probs = jax.nn.softmax(-((jnp.arange(41.0) - t) ** 2) / 50.0)
        n = pv.sample("n", dist.Categorical(probs=probs), strategy=pv.enum)
        return jnp.sqrt(n + 1.0)

    def exact(t):
        logits = -((values - t) ** 2) / 50.0
        probs = np.exp(logits - logits.max())
        return np.sum(probs / probs.sum() * np.sqrt(values + 1.0))

    with pytest.warns(UserWarning, match=r"sample site 'n': .*41 values, more than 16.*"
                                         r"pv\.enum_parallel"):
        value, grad = program.value_and_grad(KEY, 12.0)
    stats.check_exact(value, exact(12.0))
    stats.check_exact(grad, stats.numerical_grad(exact, np.float64(12.0)), rtol=1e-4)


@pytest.mark.parametrize("strategy", [pv.enum, pv.enum_parallel])
@pytest.mark.parametrize("law, size", [
    (lambda p: dist.Binomial(total_count=10**6, probs=p), 10**6 + 1),
    (lambda p: dist.Categorical(probs=jnp.full(20_000, p / 6000.0)), 20_000),
])
def test_a_support_past_the_limit_is_refused_at_trace_time(strategy, law, size):
    @pv.expectation
    def program(p):
        return pv.sample("count", law(p), strategy=strategy)

    with pytest.raises(StrategyError, match=rf"sample site 'count'.*{size} values, more than "
                                            r"the 10000.*Use pv\.reinforce or pv\.mvd"):
        program.estimate(KEY, 0.3)


def test_binomial_probabilities_of_a_huge_support_do_not_sum_to_one():
    # Why the limit: numpyro's float32 probabilities lose mass over such a support.
    d = dist.Binomial(total_count=10**6, probs=0.3)
    assert abs(float(jnp.exp(d.log_prob(d.enumerate_support(expand=False))).sum()) - 1) > 0.1
    assert scipy_stats.binom(10**6, 0.3).pmf(np.arange(10**6 + 1)).sum() == pytest.approx(1)


def _first_value_and_gradient(program, theta):
    fn = jax.jit(lambda t: program.value_and_grad(KEY, t))
    start = time.perf_counter()
    out = jax.block_until_ready(fn(theta))
    return out, time.perf_counter() - start


def test_twelve_sequential_sites_compile_about_as_fast_as_the_parallel_form(stats):
    # Without the switch this program traces its end 2^12 times (minutes to compile); with
    # it, every site runs in parallel.
    theta = jnp.linspace(0.3, 1.2, 12)
    _, parallel = _first_value_and_gradient(_bernoulli_chain(12, pv.enum_parallel), theta)
    with pytest.warns(UserWarning, match="pv.enum_parallel"):
        (value, grad), switched = _first_value_and_gradient(_bernoulli_chain(12, pv.enum), theta)
    assert switched < 8 * parallel + 5.0, (switched, parallel)
    stats.check_exact(value, _exact_chain(theta))
    stats.check_exact(grad, stats.numerical_grad(_exact_chain, np.asarray(theta, np.float64)),
                      rtol=1e-4, atol=1e-5)
