"""The noise-contrastive baselines (NCE, ranking NCE, eNCE) against exact answers.

Model: the unnormalized Gaussian f(x) = exp(-(x - mu)^2 / (2 s^2)), with normalizer
Z = s sqrt(2 pi); NCE and eNCE fit log p_m = log f - log_z. Noise: q = N(0, 1.5).

* Values at fixed params and a fixed key equal the loss computed by hand (numpy, float64) from
  the same noise draws, which are reproduced by sampling at the same address.
* Over many keys, the mean value and gradient equal the expectation over the noise, a
  Gauss-Hermite quadrature (one or two noise points per term), within four standard errors; for
  a numpyro noise and for the same noise written as a `@pv.gen` function (whose draws differ).
* Each objective recovers N(1.0, 0.7) from 4000 draws, and NCE and eNCE its normalizer.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv
from progvi.unnormalized import ence, nce, ranking_nce

NOISE_SCALE = 1.5
NOISE = dist.Normal(0.0, NOISE_SCALE)
PARAMS = {"mu": jnp.array(0.6), "log_s": jnp.array(math.log(0.9)), "log_z": jnp.array(0.3)}
XS = jnp.array([0.2, 0.9, 1.1, 1.7, -0.4])  # a small fixed batch for the exact values
Z_MAX = 4.0


@pv.gen
def gen_noise():
    """The noise as a generative function: one choice, at "y"."""
    return pv.sample("y", dist.Normal(0.0, NOISE_SCALE))


def log_f(p):
    return lambda x: -0.5 * ((x - p["mu"]) / jnp.exp(p["log_s"])) ** 2


def log_model(p):
    return lambda x: log_f(p)(x) - p["log_z"]


def no_log_z(p):
    return {k: v for k, v in p.items() if k != "log_z"}


# -- the objectives in numpy, from given noise draws -----------------------------------------------


def np_log_f(p, x):
    p = {k: float(v) for k, v in p.items()}
    return -0.5 * ((np.asarray(x, np.float64) - p["mu"]) / math.exp(p["log_s"])) ** 2


def np_log_q(y):
    y = np.asarray(y, np.float64)
    return -0.5 * (y / NOISE_SCALE) ** 2 - math.log(NOISE_SCALE) - 0.5 * math.log(2 * math.pi)


def np_log_sigmoid(g):
    return -np.logaddexp(0.0, -g)


def np_nce(p, xs, ys):
    nu = len(ys) / len(xs)
    g = lambda u: np_log_f(p, u) - float(p["log_z"]) - math.log(nu) - np_log_q(u)  # noqa: E731
    return -(np_log_sigmoid(g(xs)).mean() + nu * np_log_sigmoid(-g(ys)).mean())


def np_ranking_nce(p, xs, ys):
    g = lambda u: np_log_f(p, u) - np_log_q(u)  # noqa: E731
    gx, gy = g(xs), g(ys).reshape(len(xs), -1)
    both = np.concatenate([gx[:, None], gy], axis=1)
    top = both.max(1)
    return -np.mean(gx - top - np.log(np.exp(both - top[:, None]).sum(1)))


def np_ence(p, xs, ys):
    r = lambda u: np_log_f(p, u) - float(p["log_z"]) - np_log_q(u)  # noqa: E731
    return np.exp(-0.5 * r(xs)).mean() + np.exp(0.5 * r(ys)).mean()


def numpyro_draws(key, num, address="noise"):
    """The draws the objectives make from `NOISE`: one site at `address`."""
    program = pv.expectation(lambda: pv.sample(address, NOISE.expand((num,))))
    return np.asarray(program.estimate(key), np.float64)


# -- exact values at a fixed key -------------------------------------------------------------------


CASES = {  # name: (program of the params and the batch, numpy loss, number of noise points)
    "nce": (lambda p, xs: nce(log_model(p), NOISE, xs), np_nce, 5),
    "nce_ratio_2.4": (lambda p, xs: nce(log_model(p), NOISE, xs, noise_ratio=2.4), np_nce, 12),
    "ranking_nce_3": (
        lambda p, xs: ranking_nce(log_f(p), NOISE, xs, num_noise=3), np_ranking_nce, 15,
    ),
    "ence": (lambda p, xs: ence(log_model(p), NOISE, xs), np_ence, 5),
    "ence_7": (lambda p, xs: ence(log_model(p), NOISE, xs, num_noise=7), np_ence, 7),
}


@pytest.mark.parametrize("case", CASES)
def test_value_is_the_loss_of_its_noise_draws(case):
    objective, by_hand, num = CASES[case]
    key = jax.random.key(3)
    value = pv.expectation(objective).estimate(key, PARAMS, XS)
    ys = numpyro_draws(key, num)
    assert np.std(ys) > 0.5  # real draws, not a constant
    np.testing.assert_allclose(float(value), by_hand(PARAMS, XS, ys), rtol=2e-5)


def test_the_address_names_the_noise_site():
    key = jax.random.key(4)
    value = pv.expectation(
        lambda p, xs: nce(log_model(p), NOISE, xs, address="contrast")
    ).estimate(key, PARAMS, XS)
    np.testing.assert_allclose(
        float(value), np_nce(PARAMS, XS, numpyro_draws(key, 5, "contrast")), rtol=2e-5
    )
    assert abs(float(value) - np_nce(PARAMS, XS, numpyro_draws(key, 5, "noise"))) > 1e-3


def test_a_generative_noise_draws_its_choice_under_the_address():
    @pv.gen
    def under_noise():
        return pv.sample("noise", gen_noise())  # its one choice is at "noise/y"

    key = jax.random.key(5)
    draws = pv.expectation(lambda: pv.particles(lambda: pv.simulate(under_noise).retval, 5))
    ys = np.asarray(draws.estimate(key), np.float64)
    assert len(np.unique(ys)) == 5  # independent draws
    value = pv.expectation(lambda p, xs: nce(log_model(p), gen_noise, xs)).estimate(key, PARAMS, XS)
    np.testing.assert_allclose(float(value), np_nce(PARAMS, XS, ys), rtol=2e-5)

    @pv.gen
    def scaled_noise(scale):
        return pv.sample("y", dist.Normal(0.0, scale))

    # A call with arguments is the same noise: the same site, the same density at the data.
    called = pv.expectation(lambda p, xs: nce(log_model(p), scaled_noise(NOISE_SCALE), xs))
    np.testing.assert_allclose(float(called.estimate(key, PARAMS, XS)), float(value), rtol=1e-6)


def test_noise_ratio_draws_round_of_ratio_times_batch_points_and_uses_the_realized_ratio():
    seen = []
    c = 0.2

    def proportional_to_noise(x):  # p_m = e^c q: G = c - log(nu) at every point
        seen.append(x.shape)
        return NOISE.log_prob(x) + c

    xs = jnp.linspace(-1.0, 1.0, 10)
    for ratio, count in [(0.34, 3), (2.5, 25), (1.0, 10)]:
        seen.clear()
        program = pv.expectation(
            lambda xs, ratio=ratio: nce(proportional_to_noise, NOISE, xs, noise_ratio=ratio)
        )
        value = float(program.estimate(jax.random.key(0), xs))
        assert sorted(seen) == sorted([(10,), (count,)])
        nu = count / 10  # 0.3, not 0.34: the classifier's prior is the ratio of the counts
        g = c - math.log(nu)
        expected = -(np_log_sigmoid(g) + nu * np_log_sigmoid(-g))
        np.testing.assert_allclose(value, expected, rtol=1e-5)


COVARIANCE = jnp.array([[2.0, 0.5], [0.5, 1.0]])
SCALES = jnp.array([1.5, 0.8])
VECTOR_NOISES = {  # name: (the noise given, the distribution of one point it stands for)
    "mvn": (dist.MultivariateNormal(jnp.zeros(2), COVARIANCE),) * 2,
    "to_event": (dist.Normal(jnp.zeros(2), SCALES).to_event(1),) * 2,
    "batch": (dist.Normal(jnp.zeros(2), SCALES), dist.Normal(jnp.zeros(2), SCALES).to_event(1)),
}


@pytest.mark.parametrize("case", VECTOR_NOISES)
def test_vector_points_use_the_joint_density_of_a_point(case):
    noise, point = VECTOR_NOISES[case]
    xs = jnp.array([[0.5, 1.0], [1.5, -0.2], [0.0, 0.3]])
    mu = jnp.array([0.4, 0.1])

    def log_p(x):
        return -0.5 * jnp.sum((x - mu) ** 2, axis=-1) - math.log(2 * math.pi)

    key = jax.random.key(6)
    value = pv.expectation(lambda xs: nce(log_p, noise, xs, noise_ratio=2.0)).estimate(key, xs)
    ys = pv.expectation(lambda: pv.sample("noise", point.expand((6,)))).estimate(key)
    assert ys.shape == (6, 2)
    g = lambda u: log_p(u) - math.log(2.0) - point.log_prob(u)  # noqa: E731
    expected = -(jax.nn.log_sigmoid(g(xs)).mean() + 2.0 * jax.nn.log_sigmoid(-g(ys)).mean())
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)


# -- expectations over the noise: quadrature -------------------------------------------------------


def hermite(n):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return jnp.asarray(x, jnp.float32), jnp.asarray(w / math.sqrt(2 * math.pi), jnp.float32)


@functools.partial(jax.jit, static_argnames=("nu", "n"))
def expected_nce(p, nu=2.0, n=64):
    e, w = hermite(n)
    g = lambda u: log_model(p)(u) - math.log(nu) - NOISE.log_prob(u)  # noqa: E731
    noise_term = jnp.sum(w * jax.nn.log_sigmoid(-g(NOISE_SCALE * e)))
    return -(jnp.mean(jax.nn.log_sigmoid(g(XS))) + nu * noise_term)


@functools.partial(jax.jit, static_argnames="n")
def expected_ence(p, n=64):
    e, w = hermite(n)
    r = lambda u: log_model(p)(u) - NOISE.log_prob(u)  # noqa: E731
    return jnp.mean(jnp.exp(-0.5 * r(XS))) + jnp.sum(w * jnp.exp(0.5 * r(NOISE_SCALE * e)))


@functools.partial(jax.jit, static_argnames="n")
def expected_ranking_nce(p, n=48):
    """K = 2: a two-dimensional grid over the two noise points of each datapoint."""
    e, w = hermite(n)
    g = lambda u: log_f(p)(u) - NOISE.log_prob(u)  # noqa: E731
    gy = g(NOISE_SCALE * e)
    gx = g(XS)
    grid = jnp.stack(jnp.broadcast_arrays(gx[:, None, None], gy[None, :, None], gy[None, None, :]))
    lse = jax.nn.logsumexp(grid, axis=0)  # (B, n, n)
    return -jnp.mean(gx - jnp.einsum("bij,i,j->b", lse, w, w))


def test_the_quadratures_have_converged():
    for expected in (expected_nce, expected_ence, expected_ranking_nce):
        coarse, fine = expected(PARAMS, n=24), expected(PARAMS, n=64)
        np.testing.assert_allclose(coarse, fine, rtol=1e-5)
    # With p_m = q the exact values are known: 2 log 2 (nu = 1), 2, and log 3.
    at_noise = {"mu": jnp.array(0.0), "log_s": jnp.array(math.log(NOISE_SCALE)),
                "log_z": jnp.array(math.log(NOISE_SCALE * math.sqrt(2 * math.pi)))}
    np.testing.assert_allclose(expected_nce(at_noise, nu=1.0), 2 * math.log(2), rtol=1e-5)
    np.testing.assert_allclose(expected_ence(at_noise), 2.0, rtol=1e-5)
    np.testing.assert_allclose(expected_ranking_nce(at_noise), math.log(3), rtol=1e-5)


def check_unbiased(samples, exact):
    for leaf, target in zip(jax.tree.leaves(samples), jax.tree.leaves(exact), strict=True):
        leaf, target = np.asarray(leaf, np.float64), float(target)
        sem = leaf.std(ddof=1) / math.sqrt(leaf.shape[0])
        assert sem > 1e-5, "the estimates do not vary, so the test has no power"
        z = (leaf.mean() - target) / sem
        assert abs(z) < Z_MAX, f"mean {leaf.mean()} vs exact {target}: z = {z}"


QUADRATURE_CASES = {  # name: (objective of (log model, noise), params, exact expectation)
    "nce": (lambda p, q: nce(log_model(p), q, XS, noise_ratio=2.0), PARAMS, expected_nce),
    "ranking_nce": (
        lambda p, q: ranking_nce(log_f(p), q, XS, num_noise=2), no_log_z(PARAMS),
        expected_ranking_nce,
    ),
    "ence": (lambda p, q: ence(log_model(p), q, XS), PARAMS, expected_ence),
}


@pytest.mark.parametrize("noise", [NOISE, gen_noise], ids=["numpyro", "gen"])
@pytest.mark.parametrize("case", QUADRATURE_CASES)
def test_mean_value_and_gradient_match_the_expectation_over_the_noise(case, noise):
    objective, params, expected = QUADRATURE_CASES[case]
    program = pv.expectation(lambda p: objective(p, noise))
    keys = jax.random.split(jax.random.key(7), 4000)
    values, grads = jax.jit(jax.vmap(lambda k: program.value_and_grad(k, params)))(keys)
    check_unbiased(values, expected(params))
    check_unbiased(grads, jax.grad(expected)(params))


# -- recovering a Gaussian -------------------------------------------------------------------------

MU_STAR, SIGMA_STAR, N = 1.0, 0.7, 4000
DATA = MU_STAR + SIGMA_STAR * jax.random.normal(jax.random.key(42), (N,))
Z_STAR = SIGMA_STAR * math.sqrt(2 * math.pi)
# The maximum-likelihood standard errors at N = 4000 are 0.011 for mu and 0.008 for sigma;
# these estimators are less efficient (eNCE's errors over data sets were about 0.012 for mu and
# sigma and 0.025 relative for Z), so the tolerances are about four of their standard errors.
TOL_MU, TOL_SIGMA, TOL_Z = 0.05, 0.05, 0.1
FITS = {
    "nce": (lambda p, xs: nce(log_model(p), NOISE, xs), True),
    "ranking_nce": (lambda p, xs: ranking_nce(log_f(p), NOISE, xs, num_noise=4), False),
    "ence": (lambda p, xs: ence(log_model(p), NOISE, xs), True),
}
OPTIMIZER = optax.adam(optax.cosine_decay_schedule(0.05, 2000))


@pytest.mark.parametrize("case", FITS)
def test_recovers_the_gaussian_and_its_normalizer(case):
    objective, normalized = FITS[case]
    init = {"mu": jnp.array(0.0), "log_s": jnp.array(0.0)}
    if normalized:
        init["log_z"] = jnp.array(0.0)
    result = pv.fit(
        jax.random.key(0), pv.expectation(objective), init, OPTIMIZER, direction="minimize",
        data=DATA, batch_size=500, num_steps=2000, progress=False,
    )
    p = result.params
    assert abs(float(p["mu"]) - MU_STAR) < TOL_MU, p
    assert abs(math.exp(float(p["log_s"])) - SIGMA_STAR) < TOL_SIGMA, p
    if normalized:
        assert abs(math.exp(float(p["log_z"])) / Z_STAR - 1) < TOL_Z, p
    assert np.mean(result.history[-100:]) < np.mean(result.history[:100])


# -- errors ---------------------------------------------------------------------------------------


def estimate(objective, *args):
    return pv.expectation(objective).estimate(jax.random.key(0), *args)


OBJECTIVES = {
    "nce": lambda noise, xs, **kw: nce(NOISE.log_prob, noise, xs, **kw),
    "ranking_nce": lambda noise, xs, **kw: ranking_nce(NOISE.log_prob, noise, xs, **kw),
    "ence": lambda noise, xs, **kw: ence(NOISE.log_prob, noise, xs, **kw),
}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_a_noise_that_is_not_a_distribution_is_a_type_error(name):
    with pytest.raises(TypeError, match="noise is a str, but it must be a numpyro distribution"):
        estimate(lambda xs: OBJECTIVES[name]("normal", xs), XS)
    with pytest.raises(TypeError, match="noise is a method"):
        estimate(lambda xs: OBJECTIVES[name](NOISE.log_prob, xs), XS)


def test_a_generative_noise_with_two_choices_is_a_type_error():
    @pv.gen
    def two():
        pv.sample("a", dist.Normal(0.0, 1.0))
        return pv.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(TypeError, match="noise=two makes 2 random choices"):
        estimate(lambda xs: nce(NOISE.log_prob, two, xs), XS)


@pytest.mark.parametrize("ratio", [0.0, -1.0, float("nan"), float("inf"), True, "2", None])
def test_a_bad_noise_ratio_is_a_value_error(ratio):
    message = r"pv.unnormalized.nce: noise_ratio=.*must be a positive Python number"
    with pytest.raises(ValueError, match=message):
        estimate(lambda xs: nce(NOISE.log_prob, NOISE, xs, noise_ratio=ratio), XS)


def test_a_noise_ratio_that_gives_no_noise_point_is_a_value_error():
    with pytest.raises(ValueError, match=r"noise_ratio=0.08 with 5 datapoints gives .* = 0 noise"):
        estimate(lambda xs: nce(NOISE.log_prob, NOISE, xs, noise_ratio=0.08), XS)


@pytest.mark.parametrize("name", ["ranking_nce", "ence"])
@pytest.mark.parametrize("count", [0, -2, 2.5, "3", True])
def test_a_bad_num_noise_is_a_value_error(name, count):
    message = rf"pv.unnormalized.{name}: num_noise=.*Python int of at least 1"
    with pytest.raises(ValueError, match=message):
        estimate(lambda xs: OBJECTIVES[name](NOISE, xs, num_noise=count), XS)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_data_without_a_batch_axis_is_a_value_error(name):
    with pytest.raises(ValueError, match=rf"pv.unnormalized.{name}: data has shape \(\)"):
        estimate(lambda x: OBJECTIVES[name](NOISE, x), jnp.array(1.0))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_noise_points_of_another_shape_than_the_data_are_a_value_error(name):
    message = r"a noise point has shape \(\), but a datapoint has shape \(2,\)"
    with pytest.raises(ValueError, match=message):
        estimate(lambda xs: OBJECTIVES[name](NOISE, xs), jnp.ones((4, 2)))


@pytest.mark.parametrize(
    "name, objective",
    [
        ("log_model", lambda xs: nce(lambda x: NOISE.log_prob(x)[:, None], NOISE, xs)),
        ("log_unnormalized", lambda xs: ranking_nce(lambda x: jnp.sum(x), NOISE, xs)),
        ("log_model", lambda xs: ence(lambda x: NOISE.log_prob(x)[:, None], NOISE, xs)),
    ],
)
def test_a_log_density_of_the_wrong_shape_is_a_value_error(name, objective):
    with pytest.raises(ValueError, match=rf"{name} returned shape .* one log density per point"):
        estimate(objective, XS)
