"""Learned REINFORCE baselines against exact gradients, by hand and by enumeration.

The model: three datapoints x_i, a Bernoulli choice z_i ~ Bernoulli(sigmoid(theta * x_i)) each,
drawn with REINFORCE inside `pv.plate`, and the term f_i = OFFSET_i + w * z_i - w^2. The terms have
large offsets, so REINFORCE without a baseline has a large variance, and a baseline linear in
x_i (b_i = psi_0 + psi_1 x_i) can learn most of E[f_i]. The exact gradient is a finite sum.
The ``- w^2`` keeps the objective bounded in ``w``, so that training has a fixed point.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv

XS = jnp.array([-1.0, 0.5, 2.0])
OFFSETS = jnp.array([10.0, 20.0, 40.0])  # distinct, so a plate's value tells its draws apart
PARAMS = {"theta": jnp.array(0.3), "w": jnp.array(1.5), "psi": jnp.array([0.0, 0.0])}


def baseline_of(psi, x):
    return psi[0] + psi[1] * x


def term(params, x, offset, learned=True):
    logits = params["theta"] * x
    b = baseline_of(params["psi"], x)
    strategy = pv.reinforce(baseline=pv.learned_baseline(b)) if learned else pv.reinforce
    z = pv.sample("z", dist.Bernoulli(logits=logits), strategy=strategy)
    return offset + params["w"] * z - params["w"] ** 2


@pv.expectation
def with_learned(params):
    return pv.plate(lambda x, o: term(params, x, o), XS, OFFSETS)


@pv.expectation
def without(params):
    return pv.plate(lambda x, o: term(params, x, o, learned=False), XS, OFFSETS)


def terms(params, zs):
    return OFFSETS + params["w"] * zs - params["w"] ** 2


def exact_value(params):
    p = jax.nn.sigmoid(params["theta"] * XS)
    return jnp.sum(OFFSETS + params["w"] * p - params["w"] ** 2)


def exact_squared_error(params):
    """E[Σ_i (f_i - b_i)^2], the expected auxiliary loss."""
    p = jax.nn.sigmoid(params["theta"] * XS)
    b = baseline_of(params["psi"], XS)
    zero = OFFSETS - params["w"] ** 2 - b
    one = zero + params["w"]
    return jnp.sum(p * one**2 + (1 - p) * zero**2)


def trained_psi():
    """The least-squares baseline: the regression of E[f_i] on (1, x_i) (variance-weighted)."""
    p = jax.nn.sigmoid(PARAMS["theta"] * XS)
    mean = OFFSETS + PARAMS["w"] * p - PARAMS["w"] ** 2
    design = jnp.stack([jnp.ones_like(XS), XS], 1)
    return jnp.linalg.lstsq(design, mean)[0]


@functools.cache
def batched_grad(program):
    """Many gradient estimates at once, compiled once per program (params are an argument)."""
    return jax.jit(jax.vmap(program.grad, in_axes=(0, None)))


def gradients(program, params, seed, num=5_000):
    keys = jax.random.split(jax.random.key(seed), num)
    grads = batched_grad(program)(keys, params)
    return jax.tree.map(lambda g: np.asarray(g, np.float64), grads)


def z_scores(samples, exact):
    sem = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
    assert np.all(sem > 1e-4), "the estimates do not vary, so the test has no power"
    return (samples.mean(0) - np.asarray(exact, np.float64)) / sem


# -- unbiasedness and variance --------------------------------------------------------------------


@pytest.mark.parametrize("psi", [jnp.array([0.0, 0.0]), jnp.array([3.0, -2.0]), None])
def test_the_gradient_stays_unbiased_with_a_learned_baseline(psi):
    params = {**PARAMS, "psi": trained_psi() if psi is None else psi}
    exact = jax.grad(exact_value)(params)
    for program, seed in ((with_learned, 0), (without, 1)):
        grads = gradients(program, params, seed)
        for name in ("theta", "w"):
            z = z_scores(grads[name], exact[name])
            assert abs(z) < 4.0, f"{program.__name__}, d/d{name}: z = {z}"
        # The objective does not depend on the baseline: its gradient there is exactly zero.
        assert np.all(grads["psi"] == 0.0)


def test_a_trained_baseline_cuts_the_variance_by_a_large_factor():
    trained = {**PARAMS, "psi": trained_psi()}
    var_without = gradients(without, trained, 2)["theta"].var()
    var_learned = gradients(with_learned, trained, 3)["theta"].var()
    # Measured: about 600x on this model (offsets 10-40, w = 1.5).
    assert var_without / var_learned > 100.0, (var_without, var_learned)


# -- the auxiliary loss and its gradient ----------------------------------------------------------


def draws_from_value(value, params):
    """The plate's draws z_i, recovered from its value Σ_i (OFFSET_i + w z_i - w^2)."""
    for zs in itertools.product((0.0, 1.0), repeat=3):
        if np.isclose(float(jnp.sum(terms(params, jnp.array(zs)))), float(value)):
            return jnp.array(zs)
    raise AssertionError(f"no draws give the value {value}")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_baseline_params_get_exactly_the_squared_error_gradient(seed):
    params = {**PARAMS, "psi": jnp.array([12.0, 9.0])}
    key = jax.random.key(seed)
    out = with_learned.evaluate(key, None, params)
    zs = draws_from_value(out.value, params)

    def by_hand(p):
        f = terms(params, zs)  # the terms at the drawn values, held fixed
        return jnp.sum((f - baseline_of(p["psi"], XS)) ** 2)

    assert np.isclose(out.aux_loss, by_hand(params), rtol=1e-6)
    got = jax.jit(jax.grad(lambda p: with_learned.evaluate(key, None, p).aux_loss))(params)
    np.testing.assert_allclose(got["psi"], jax.grad(by_hand)(params)["psi"], rtol=1e-5)
    # Only the baseline's params: the squared error does not train the objective's.
    assert got["theta"] == 0.0 and got["w"] == 0.0
    # The objective's gradient uses the baseline, stopped: (f_i - b_i) d log q(z_i).
    def surrogate(p):
        f = terms(p, zs)
        b = baseline_of(params["psi"], XS)
        log_q = dist.Bernoulli(logits=p["theta"] * XS).log_prob(zs)
        return jnp.sum(f + jax.lax.stop_gradient(f - b) * log_q)

    grad = with_learned.grad(key, params)
    expected = jax.grad(surrogate)(params)
    np.testing.assert_allclose(grad["theta"], expected["theta"], rtol=1e-5)
    np.testing.assert_allclose(grad["w"], expected["w"], rtol=1e-5)


def test_the_expected_squared_error_is_the_mean_auxiliary_loss():
    params = {**PARAMS, "psi": jnp.array([5.0, 1.0])}
    keys = jax.random.split(jax.random.key(7), 20_000)
    losses = np.asarray(jax.jit(jax.vmap(
        lambda k: with_learned.evaluate(k, None, params).aux_loss))(keys), np.float64)
    z = (losses.mean() - float(exact_squared_error(params))) / (losses.std() / np.sqrt(len(losses)))
    assert abs(z) < 4.0, z


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_step_descends_the_squared_error_in_both_directions(direction):
    params = {**PARAMS, "psi": jnp.array([1.0, 2.0])}
    key = jax.random.key(11)
    train = pv.make_step(with_learned, optax.sgd(1.0), direction=direction)
    new, _ = train.step(train.init(params), key)
    sign = -1.0 if direction == "maximize" else 1.0
    objective = with_learned.grad(key, params)
    aux = jax.jit(jax.grad(lambda p: with_learned.evaluate(key, None, p).aux_loss))(params)
    # sgd(1): params - gradient of (sign * objective + aux_loss).
    np.testing.assert_allclose(new.params["psi"], params["psi"] - aux["psi"], rtol=1e-6)
    np.testing.assert_allclose(new.params["theta"], params["theta"] - sign * objective["theta"],
                               rtol=1e-6)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_fit_trains_the_baseline_towards_the_least_squares_one(direction):
    program = with_learned
    if direction == "minimize":
        program = pv.expectation(lambda p: -with_learned(p))
    params = {**PARAMS, "psi": jnp.array([0.0, 0.0])}
    result = pv.fit(jax.random.key(5), program, params, optax.adam(0.3), direction=direction,
                    num_steps=400, progress=False)
    before = float(exact_squared_error({**result.params, "psi": params["psi"]}))
    after = float(exact_squared_error(result.params))
    # The squared error falls from ~2000 to the variance of the terms (~1.4) plus what a
    # line in x_i cannot fit.
    assert after < before / 100.0, (before, after)


def test_per_datapoint_training_averages_the_auxiliary_loss():
    @pv.expectation
    def one(params, data):
        x, offset = data
        return term(params, x, offset)

    params = {**PARAMS, "psi": jnp.array([2.0, 0.5])}
    train = pv.make_step(one, optax.sgd(1.0), direction="maximize", per_datapoint=True)
    key = jax.random.key(3)
    new, _ = train.step(train.init(params, (XS, OFFSETS)), key, (XS, OFFSETS))
    keys = jax.random.split(key, 3)

    def mean_aux(p):
        losses = jax.vmap(lambda k, x, o: one.evaluate(k, None, p, (x, o)).aux_loss)(
            keys, XS, OFFSETS)
        return jnp.mean(losses)

    np.testing.assert_allclose(new.params["psi"],
                               params["psi"] - jax.jit(jax.grad(mean_aux))(params)["psi"],
                               rtol=1e-6)


# -- several sites, particles ---------------------------------------------------------------------


def test_each_site_regresses_its_own_baseline_on_the_value():
    @pv.expectation
    def two_sites(params):
        a = pv.sample("a", dist.Bernoulli(logits=params["theta"]),
                      strategy=pv.reinforce(baseline=pv.learned_baseline(params["psi"][0])))
        c = pv.sample("c", dist.Bernoulli(logits=-params["theta"]),
                      strategy=pv.reinforce(baseline=pv.learned_baseline(params["psi"][1] * 2)))
        return 5.0 + a + 3.0 * c

    params = {**PARAMS, "psi": jnp.array([1.0, 2.0])}
    out = two_sites.evaluate(jax.random.key(0), None, params)
    assert np.isclose(out.aux_loss, (out.value - 1.0) ** 2 + (out.value - 4.0) ** 2)
    g = jax.jit(jax.grad(lambda p: two_sites.evaluate(jax.random.key(0), None, p).aux_loss))(
        params)
    np.testing.assert_allclose(g["psi"], [-2 * (out.value - 1.0), -4 * (out.value - 4.0)],
                               rtol=1e-6)


LOGITS = jnp.array([0.4, -0.3, 0.1])  # the guide's three-valued latent
LOG_JOINT = jnp.array([-1.0, -2.5, -0.2])  # log p(x, z) for z = 0, 1, 2
K = 2


@pv.gen
def model():
    z = pv.sample("z", dist.Categorical(logits=jnp.zeros(3)))
    pv.sample("x", dist.Normal(LOG_JOINT[z], 1.0))


@pv.gen
def guide(phi, psi):
    pv.sample("z", dist.Categorical(logits=phi),
              strategy=pv.reinforce(baseline=pv.learned_baseline(psi)))


@pv.expectation
def iwae(phi, psi):
    return pv.iwae(model, guide, {"x": 0.0}, K, guide_args=(phi, psi))


def exact_iwae(phi):
    zs = jnp.array(list(itertools.product(range(3), repeat=K)))
    log_q = jax.nn.log_softmax(phi)[zs]
    log_w = (jnp.log(1 / 3) + dist.Normal(LOG_JOINT, 1.0).log_prob(0.0))[zs] - log_q
    return jnp.sum(jnp.exp(log_q.sum(1)) * (jax.nn.logsumexp(log_w, 1) - jnp.log(K)))


def test_iwae_with_a_learned_baseline_per_particle_is_unbiased_and_trains_it():
    psi = jnp.array(-3.0)
    keys = jax.random.split(jax.random.key(4), 5_000)
    grads = np.asarray(jax.jit(jax.vmap(lambda k: iwae.grad(k, LOGITS, psi)))(keys), np.float64)
    z = z_scores(grads, jax.grad(exact_iwae)(LOGITS))
    assert np.all(np.abs(z) < 4.0), z
    out = iwae.evaluate(keys[0], None, LOGITS, psi)
    # One baseline per particle, each regressed on the bound's value.
    assert np.isclose(out.aux_loss, K * (out.value - psi) ** 2, rtol=1e-6)
    g = jax.jit(jax.grad(lambda b: iwae.evaluate(keys[0], None, LOGITS, b).aux_loss))(psi)
    assert np.isclose(g, -2 * K * (out.value - psi), rtol=1e-6)


# -- misuse ---------------------------------------------------------------------------------------


def test_with_strategies_cannot_carry_a_learned_baseline():
    with pytest.raises(pv.StrategyError, match="Attach it at the site"):
        pv.with_strategies(without, {"z": pv.reinforce(baseline=pv.learned_baseline(1.0))})


def test_a_baseline_must_be_a_float_scalar_per_draw():
    with pytest.raises(pv.StrategyError, match="must be a float"):
        pv.learned_baseline(jnp.array(1))
    with pytest.raises(pv.StrategyError, match="not an array"):
        pv.learned_baseline("b")

    @pv.expectation
    def vector_baseline(psi):
        z = pv.sample("z", dist.Bernoulli(probs=0.5 * jnp.ones(3)),
                      strategy=pv.reinforce(baseline=pv.learned_baseline(psi)))
        return jnp.sum(z)

    with pytest.raises(pv.StrategyError, match=r"'z'.*shape \(3,\).*scalar"):
        vector_baseline.evaluate(jax.random.key(0), None, jnp.zeros(3))


def test_a_learned_baseline_where_the_term_is_not_known_once_is_an_error():
    @pv.expectation
    def in_scan(psi):
        def body(total, _):
            z = pv.sample("z", dist.Bernoulli(probs=0.5),
                          strategy=pv.reinforce(baseline=pv.learned_baseline(psi)))
            return total + z, None

        return jax.lax.scan(body, 0.0, None, length=3)[0]

    with pytest.raises(pv.ProgramError, match=r"'z' is inside a lax.scan body.*Python loop"):
        in_scan.evaluate(jax.random.key(0), None, 0.0)

    @pv.expectation
    def after_enum(psi):
        a = pv.sample("a", dist.Bernoulli(probs=0.3), strategy=pv.enum)
        z = pv.sample("z", dist.Bernoulli(probs=0.5),
                      strategy=pv.reinforce(baseline=pv.learned_baseline(psi)))
        return a + z

    with pytest.raises(pv.ProgramError, match=r"'z' is after sample site 'a'"):
        after_enum.evaluate(jax.random.key(0), None, 0.0)


def test_a_learned_baseline_before_an_enumerated_site_follows_the_enumerated_value():
    @pv.expectation
    def before_enum(psi):
        z = pv.sample("z", dist.Bernoulli(probs=0.5),
                      strategy=pv.reinforce(baseline=pv.learned_baseline(psi)))
        a = pv.sample("a", dist.Bernoulli(probs=0.3), strategy=pv.enum)
        return 2.0 * z + a

    out = before_enum.evaluate(jax.random.key(0), None, 1.0)
    assert np.isclose(out.value % 1.0, 0.3)  # E over a of 2 z + a
    assert np.isclose(out.aux_loss, (out.value - 1.0) ** 2)
