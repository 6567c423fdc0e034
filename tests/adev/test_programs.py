"""Programs the interpreter must handle: JAX primitives, control flow, vmap, nesting, keys."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from jax import lax

import progvi as pv

KEY = jax.random.key(0)
N = 40_000


def mean_and_se(samples):
    samples = np.asarray(samples, dtype=np.float64)
    return samples.mean(0), samples.std(0) / np.sqrt(samples.shape[0])


def assert_unbiased(samples, exact):
    mean, se = mean_and_se(samples)
    assert np.all(se > 0), "the estimator has no variance here: the test would be vacuous"
    z = (mean - exact) / se
    assert np.all(np.abs(z) < 4), f"mean {mean}, exact {exact}, z {z}"


def many_grads(program, *args, n=N, key=KEY, argnums=0):
    keys = jax.random.split(key, n)
    return jax.jit(jax.vmap(lambda k: program.grad(k, *args, argnums=argnums)))(keys)


def gauss_hermite_expectation(f, mu, sigma, degree=80):
    """E[f(x)], x ~ N(mu, sigma^2), by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
    return np.sum(weights * f(mu + sigma * nodes)) / np.sqrt(2 * np.pi)


@jax.custom_vjp
def clipped_square(x):
    return x**2


clipped_square.defvjp(lambda x: (x**2, x), lambda x, g: (2 * x * g,))


def deterministic(theta):
    """A program without sample sites that uses custom_jvp, custom_vjp, jit and while_loop."""
    pair = jnp.stack([theta, 2 * theta])
    y = jax.nn.relu(theta) + jax.nn.softplus(theta) + jax.nn.logsumexp(pair)
    y = y + jax.jit(lambda a: jnp.sin(a) * a)(theta) + clipped_square(theta)
    # A while_loop whose trip count depends on theta (not differentiable, but traced with it).
    step = lambda c: (c[0] + 1, c[1] + jnp.abs(theta))
    count = lax.while_loop(lambda c: c[1] < 4.0, step, (0, 0.0))
    return y + count[0] * theta


def test_program_without_sites_is_differentiated_exactly():
    program = pv.expectation(deterministic)
    for theta in [-0.7, 0.3, 1.2]:
        value, grad = program.value_and_grad(KEY, theta)
        np.testing.assert_allclose(value, deterministic(theta), rtol=1e-6)
        np.testing.assert_allclose(grad, jax.grad(deterministic)(theta), rtol=1e-5)


def test_custom_derivative_ops_after_a_reparameterized_site_are_unbiased():
    @pv.expectation
    def program(theta):
        x = pv.sample("x", dist.Normal(theta, 1.0))
        return jax.nn.relu(x) + jax.nn.softplus(2 * x) + clipped_square(x)

    def f_prime(x):
        return (x > 0) + 2 * jax.nn.sigmoid(2 * x) + 2 * x

    exact = gauss_hermite_expectation(lambda x: np.asarray(f_prime(x)), 0.4, 1.0)
    assert_unbiased(many_grads(program, 0.4), exact)


def test_cond_with_sites_in_branches_under_enumeration():
    # b ~ Bernoulli(p) enumerated; the branch taken draws x with a different law.
    # E = p E[x^2 | x~N(mu,1)] + (1-p) E[exp(x) | x~N(mu, 0.5)]
    @pv.expectation
    def program(params):
        p, mu = params["p"], params["mu"]
        b = pv.sample("b", dist.Bernoulli(probs=p), strategy=pv.enum)
        return lax.cond(
            b > 0,
            lambda: pv.sample("x", dist.Normal(mu, 1.0)) ** 2,
            lambda: jnp.exp(pv.sample("x", dist.Normal(mu, 0.5))),
        )

    p, mu = 0.3, 0.2
    d_p = (mu**2 + 1) - np.exp(mu + 0.125)
    d_mu = p * 2 * mu + (1 - p) * np.exp(mu + 0.125)
    grads = many_grads(program, {"p": p, "mu": mu})
    assert_unbiased(grads["p"], d_p)
    assert_unbiased(grads["mu"], d_mu)


def test_continuation_strategies_inside_a_switch_branch():
    @pv.expectation
    def program(theta):
        index = pv.sample("i", dist.Categorical(probs=jnp.array([0.2, 0.3, 0.5])))
        branches = [
            lambda: theta,
            lambda: pv.sample("c", dist.Bernoulli(probs=theta), strategy=pv.mvd) * 3.0,
            lambda: jnp.sin(pv.sample("n", dist.Normal(theta, 1.0))),
        ]
        return lax.switch(index, branches)

    theta = 0.6
    exact = 0.2 + 0.3 * 3.0 + 0.5 * np.exp(-0.5) * np.cos(theta)
    assert_unbiased(many_grads(program, theta), exact)


@pytest.mark.parametrize("strategy", [pv.reparam, pv.reinforce], ids=["reparam", "reinforce"])
def test_scan_body_sites_are_unbiased(strategy):
    # Random walk x_t = x_{t-1} + eps_t, eps_t ~ N(theta, 1): E[x_T^2] = (T theta)^2 + T.
    length = 5

    @pv.expectation
    def program(theta):
        def step(x, _):
            x = x + pv.sample("eps", dist.Normal(theta, 1.0), strategy=strategy)
            return x, x

        final, _ = lax.scan(step, 0.0, None, length=length)
        return final**2

    theta = 0.3
    assert_unbiased(many_grads(program, theta), 2 * length**2 * theta)


def test_fori_loop_body_sites_are_unbiased():
    @pv.expectation
    def program(theta):
        body = lambda i, acc: acc + jnp.exp(pv.sample("x", dist.Normal(theta * i, 1.0)))
        return lax.fori_loop(0, 3, body, 0.0)

    theta = 0.2
    exact = sum(i * np.exp(theta * i + 0.5) for i in range(3))
    assert_unbiased(many_grads(program, theta), exact)


def test_every_site_and_iteration_draws_independently():
    @pv.expectation
    def program(theta):
        a = pv.sample("a", dist.Normal(theta, 1.0))
        b = pv.sample("b", dist.Normal(theta, 1.0))
        _, ys = lax.scan(lambda c, _: (c, pv.sample("y", dist.Normal(theta, 1.0))), 0.0, None, 4)
        return jnp.concatenate([jnp.stack([a, b]), ys])

    draws = jax.jit(jax.vmap(lambda k: program.estimate(k, 0.0)))(jax.random.split(KEY, 5000))
    corr = np.corrcoef(np.asarray(draws).T)
    off_diagonal = corr[~np.eye(6, dtype=bool)]
    assert np.all(np.abs(off_diagonal) < 4 / np.sqrt(5000)), corr
    np.testing.assert_allclose(np.asarray(draws).std(0), 1.0, atol=0.05)


def test_continuation_strategy_inside_scan_is_a_trace_time_error():
    @pv.expectation
    def program(theta):
        flip = lambda: pv.sample("flip", dist.Bernoulli(probs=theta), strategy=pv.enum)
        step = lambda c, _: (c + flip(), 0)
        return lax.scan(step, 0, None, length=3)[0] * 1.0

    with pytest.raises(pv.StrategyError, match=r"'flip'.*lax\.scan.*Python loop"):
        program.grad(KEY, 0.5)


def test_vmap_inside_a_program_batches_the_site():
    @pv.expectation
    def program(mus):
        z = jax.vmap(lambda m: pv.sample("z", dist.Normal(m, 1.0)))(mus)
        return jnp.sum(jnp.sin(z))

    mus = jnp.array([0.1, -0.4, 0.9])
    exact = np.exp(-0.5) * np.cos(np.asarray(mus))
    assert_unbiased(many_grads(program, mus), exact)

    rf = pv.with_strategies(program, {"z": pv.reinforce})
    assert_unbiased(many_grads(rf, mus, n=100_000), exact)


def test_continuation_strategy_under_vmap_is_an_error():
    @pv.expectation
    def program(ps):
        return jnp.sum(jax.vmap(lambda p: pv.sample("b", dist.Bernoulli(probs=p), pv.enum))(ps))

    with pytest.raises(pv.StrategyError, match=r"'b'.*jax\.vmap"):
        program.grad(KEY, jnp.array([0.2, 0.7]))


def test_vmapped_estimates_are_transposed_once():
    @pv.expectation
    def local(w, x):
        z = pv.sample("z", dist.Normal(jnp.tanh(x @ w), 1.0))
        return jnp.sum(z**2)

    w, xs = jnp.ones((5, 3)) * 0.1, jnp.ones((7, 5))
    keys = jax.random.split(KEY, 7)

    def loss(w):
        return jnp.mean(jax.vmap(lambda k, x: local.estimate(k, w, x))(keys, xs))

    shapes = set()

    def collect(jaxpr):
        for eqn in jaxpr.eqns:
            shapes.update(tuple(v.aval.shape) for v in eqn.outvars)
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    collect(inner)

    collect(jax.make_jaxpr(jax.grad(loss))(w).jaxpr)
    assert (7, 5, 3) not in shapes, "a per-example parameter gradient was materialized"
    grads = jax.vmap(lambda k: jax.grad(lambda w: jnp.mean(
        jax.vmap(lambda kk, x: local.estimate(kk, w, x))(jax.random.split(k, 7), xs)))(w))(
        jax.random.split(KEY, 4000))
    # E[z^2] = tanh(x w)^2 + 1 summed over 3 outputs: exact gradient by jax.grad.
    exact = jax.grad(lambda w: jnp.mean(jax.vmap(lambda x: jnp.sum(jnp.tanh(x @ w) ** 2))(xs)))(w)
    assert_unbiased(grads, np.asarray(exact))


def test_nested_expectations():
    @pv.expectation
    def inner(theta):
        return jnp.exp(pv.sample("x", dist.Normal(theta, 1.0)))

    @pv.expectation
    def inlined(theta):
        y = pv.sample("y", dist.Normal(theta, 1.0))
        return y * inner(theta)

    @pv.expectation
    def estimated(theta, key):
        y = pv.sample("y", dist.Normal(theta, 1.0))
        return y * inner.estimate(key, theta)

    theta = 0.3
    exact = np.exp(theta + 0.5) * (1 + theta)  # d/dθ θ e^{θ+1/2}
    assert_unbiased(many_grads(inlined, theta), exact)
    keys = jax.random.split(jax.random.key(7), N)
    grads = jax.jit(jax.vmap(lambda k, k2: estimated.grad(k, theta, k2)))(
        jax.random.split(KEY, N), keys
    )
    assert_unbiased(grads, exact)


def test_nested_strategy_overrides_compose_outer_wins():
    @pv.expectation
    def inner(theta):
        return pv.sample("b", dist.Bernoulli(probs=theta)) * 1.0

    inner_enum = pv.with_strategies(inner, {"b": pv.enum})

    @pv.expectation
    def outer(theta):
        return inner_enum(theta) * 2.0

    assert float(jnp.var(many_grads(outer, 0.3, n=64))) == 0.0  # enumeration: exact
    outer_rf = pv.with_strategies(outer, {"*": pv.reinforce})
    assert float(jnp.var(many_grads(outer_rf, 0.3, n=64))) > 0.0


def test_transformations_around_estimate_compose():
    @pv.expectation
    def program(theta, scale):
        return scale * pv.sample("x", dist.Normal(theta, 1.0)) ** 2

    keys = jax.random.split(KEY, 3)
    f = jax.jit(jax.vmap(jax.grad(lambda k, t: program.estimate(k, t, 2.0), argnums=1), (0, None)))
    direct = jnp.stack([program.grad(k, 0.5, 2.0) for k in keys])
    np.testing.assert_allclose(f(keys, 0.5), direct, rtol=1e-5)
    second = jax.grad(jax.grad(lambda t: program.estimate(KEY, t, 2.0)))(0.5)
    assert np.isfinite(second)


def test_same_key_same_result_argnums_and_pytrees():
    @pv.expectation
    def program(params, x):
        z = pv.sample("z", dist.Normal(params["m"] * x, jnp.exp(params["s"])))
        return z**2

    params = {"m": 0.5, "s": -0.2}
    a = program.value_and_grad(KEY, params, 2.0, argnums=(0, 1))
    b = program.value_and_grad(KEY, params, 2.0, argnums=(0, 1))
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), a, b))
    value, (g_params, g_x) = a
    assert set(g_params) == {"m", "s"} and jnp.shape(g_x) == ()
    assert program.estimate(KEY, params, 2.0) == value
    assert program.estimate(jax.random.key(1), params, 2.0) != value
    np.testing.assert_allclose(
        program.grad(KEY, params, 2.0)["m"],
        jax.grad(lambda p: program.estimate(KEY, p, 2.0))(params)["m"],
    )


def test_draws_are_keyed_by_address_not_by_position():
    @pv.expectation
    def program(m):
        return pv.sample("z", dist.Normal(m, 1.0))

    @pv.expectation
    def with_unrelated_work(m):
        m = jnp.float32(m) * 1.0 + jnp.sin(0.0)
        return pv.sample("z", dist.Normal(m, 1.0))

    a = program.estimate(KEY, 0.0)
    assert a == program.estimate(KEY, jnp.float32(0.0))  # a weak-type conversion moves no draw
    assert a == with_unrelated_work.estimate(KEY, 0.0)


@pytest.mark.parametrize("strategy", [pv.enum_parallel, pv.leave_one_out(num_samples=4)],
                         ids=["enum_parallel", "leave_one_out"])
def test_a_cond_in_a_vmapped_continuation_is_differentiated(strategy):
    # The continuation runs under jax.vmap, where a cond on the sampled value becomes a select
    # whose batching puts a stop_gradient on tangents; reverse mode must still transpose it.
    @pv.expectation
    def program(p):
        b = pv.sample("b", dist.Bernoulli(0.3), strategy=strategy)
        return jax.lax.cond(b > 0, lambda _: 0.0, lambda p: -p / 2, p)

    grads = jax.vmap(lambda k: program.grad(k, 0.7))(jax.random.split(KEY, 2000))
    # E = 0.7 * (-p / 2): d/dp = -0.35, exactly for enumeration.
    assert abs(float(grads.mean()) + 0.35) < 4 * float(grads.std()) / np.sqrt(2000) + 1e-6
    value, tangent = jax.jvp(lambda p: program.estimate(KEY, p), (0.7,), (1.0,))
    assert jnp.isfinite(value) and jnp.isfinite(tangent)


def test_jvp_with_python_numbers_for_primals_and_tangents():
    @pv.expectation
    def program(q):
        return pv.sample("x", dist.Normal(q, 1.0)) ** 2

    value, tangent = jax.jvp(lambda q: program.estimate(KEY, q), (0.7,), (1.0,))
    x = jnp.sqrt(value)  # the draw, up to sign; the pathwise tangent is 2x dx/dq = 2x
    assert abs(abs(float(tangent)) - 2 * float(x)) < 1e-4
    assert float(tangent) == pytest.approx(float(program.grad(KEY, 0.7)))
