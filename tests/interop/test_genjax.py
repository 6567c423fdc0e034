"""genjax generative functions as progvi generative functions: densities agree with genjax's own,
choice maps convert both ways, ELBO gradients mixing a genjax model with a progvi guide and a
NumPyro model with a genjax guide are unbiased against the closed form, and strategies (genjax's
ADEV forms and `pv.with_strategies`) take effect."""

import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import genjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import progvi as pv
from progvi.gen.scan import Scan
from progvi.gen.vmap import Vmap

# A two-component mixture: b ~ Bernoulli(P_B), z ~ N(+-MU, 1), x ~ N(z, 1), x observed.
P_B, MU, X_OBS = 0.4, 2.0, 0.7
LOG_2PI = math.log(2 * math.pi)


@genjax.gen
def genjax_model():
    b = genjax.flip(P_B) @ "b"
    z = genjax.normal(jnp.where(b, MU, -MU), 1.0) @ "z"
    return genjax.normal(z, 1.0) @ "x"


def numpyro_model():
    b = numpyro.sample("b", dist.Bernoulli(P_B))
    z = numpyro.sample("z", dist.Normal(jnp.where(b > 0, MU, -MU), 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=X_OBS)


@pv.gen
def progvi_guide(params):
    pv.sample("b", dist.Bernoulli(jax.nn.sigmoid(params["logit"])))
    pv.sample("z", dist.Normal(params["m"], jnp.exp(params["log_s"])))


@genjax.gen
def genjax_guide(params):
    genjax.flip(jax.nn.sigmoid(params["logit"])) @ "b"
    genjax.normal(params["m"], jnp.exp(params["log_s"])) @ "z"


PARAMS = {"logit": jnp.array(0.3), "m": jnp.array(0.5), "log_s": jnp.array(-0.3)}


def elbo_exact(params):
    """E_q[log p(b, z, x) - log q(b) - log q(z)] with q(b, z) = Bernoulli(b; q) N(z; m, s^2)."""
    q, m, s = jax.nn.sigmoid(params["logit"]), params["m"], jnp.exp(params["log_s"])
    total = -0.5 * LOG_2PI - 0.5 * ((X_OBS - m) ** 2 + s**2)  # E log N(x; z, 1)
    total += 0.5 * (LOG_2PI + 1.0) + jnp.log(s)  # entropy of q(z)
    for q_b, p_b, mu in [(q, P_B, MU), (1.0 - q, 1.0 - P_B, -MU)]:
        prior_z = -0.5 * LOG_2PI - 0.5 * ((m - mu) ** 2 + s**2)
        total += q_b * (math.log(p_b) - jnp.log(q_b) + prior_z)
    return total


def _check_unbiased(samples, exact):
    for name in exact:
        draws = np.asarray(samples[name], np.float64)
        sem = draws.std(ddof=1) / np.sqrt(draws.shape[0])
        assert sem > 1e-6, f"{name}: the estimates do not vary"
        z = (draws.mean() - float(exact[name])) / sem
        assert abs(z) < 4.0, f"{name}: mean {draws.mean()} vs {exact[name]} (z = {z})"


def _grads(program, n, seed):
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.jit(jax.vmap(lambda k: program.grad(k, PARAMS)))(keys)


STRATEGIES = [
    {},  # defaults: REINFORCE for the discrete b, reparameterization for z
    {"b": pv.enum},
    {"b": pv.mvd, "z": pv.reinforce},
]
STRATEGY_IDS = ["default", "b-enum", "b-mvd-z-reinforce"]


@pytest.mark.parametrize("strategies", STRATEGIES, ids=STRATEGY_IDS)
def test_elbo_of_a_genjax_model_with_a_progvi_guide_is_unbiased(strategies):
    model = pv.interop.genjax(genjax_model)

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, progvi_guide, {"x": X_OBS}, guide_args=(params,))

    grads = _grads(pv.with_strategies(elbo, strategies), 20_000, 1)
    _check_unbiased(grads, jax.grad(elbo_exact)(PARAMS))


@pytest.mark.parametrize("strategies", STRATEGIES, ids=STRATEGY_IDS)
def test_elbo_of_a_numpyro_model_with_a_genjax_guide_is_unbiased(strategies):
    model, guide = pv.interop.numpyro(numpyro_model), pv.interop.genjax(genjax_guide)

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, guide, {}, guide_args=(params,))

    grads = _grads(pv.with_strategies(elbo, strategies), 20_000, 2)
    _check_unbiased(grads, jax.grad(elbo_exact)(PARAMS))


# Only the discrete choice: its exact ELBO is a sum of two terms, and an enumerated gradient is
# exact for every key, while a REINFORCE one varies around it.
@genjax.gen
def coin_model():
    b = genjax.flip(P_B) @ "b"
    return genjax.normal(jnp.where(b, MU, -MU), 1.0) @ "x"


def coin_elbo_exact(params):
    q = jax.nn.sigmoid(params["logit"])
    total = 0.0
    for q_b, p_b, mu in [(q, P_B, MU), (1.0 - q, 1.0 - P_B, -MU)]:
        likelihood = -0.5 * LOG_2PI - 0.5 * (X_OBS - mu) ** 2
        total += q_b * (math.log(p_b) + likelihood - jnp.log(q_b))
    return total


def _coin_elbo(flip):
    @genjax.gen
    def guide(params):
        return flip(jax.nn.sigmoid(params["logit"])) @ "b"

    model, guide = pv.interop.genjax(coin_model), pv.interop.genjax(guide)

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, guide, {"x": X_OBS}, guide_args=(params,))

    return elbo


FLIP_ENUM = genjax.core.distribution(genjax.flip_enum, genjax.flip.logpdf, name="flip_enum")


def _is_exact(grads, exact):
    return np.allclose(grads["logit"], exact["logit"], rtol=1e-4, atol=1e-6)


def test_genjax_estimators_set_the_strategy_and_with_strategies_overrides_it():
    exact = {"logit": jax.grad(coin_elbo_exact)(PARAMS)["logit"]}
    enumerated = _coin_elbo(FLIP_ENUM)  # genjax's flip_enum estimator: pv.enum
    assert _is_exact(_grads(enumerated, 50, 3), exact)
    overridden = _grads(pv.with_strategies(enumerated, {"b": pv.reinforce}), 20_000, 4)
    assert not _is_exact(overridden, exact)
    _check_unbiased(overridden, exact)

    reinforced = _coin_elbo(genjax.flip_reinforce)  # genjax's REINFORCE estimator
    grads = _grads(reinforced, 20_000, 5)
    assert not _is_exact(grads, exact)
    _check_unbiased(grads, exact)
    assert _is_exact(_grads(pv.with_strategies(reinforced, {"b": pv.enum}), 50, 6), exact)
    # MVD differentiates the law of b exactly but -log q(b) at the drawn b: unbiased, not exact.
    grads = _grads(pv.with_strategies(reinforced, {"b": pv.mvd}), 20_000, 7)
    assert not _is_exact(grads, exact)
    _check_unbiased(grads, exact)


@genjax.gen
def reparam_guide(m, log_s):
    return genjax.normal_reparam(m, jnp.exp(log_s)) @ "z"


def test_normal_reparam_is_reparameterized_and_reinforce_when_overridden():
    # E_q[z^2] = m^2 + s^2: its pathwise gradient has variance, REINFORCE's much more.
    guide = pv.interop.genjax(reparam_guide)

    @pv.expectation
    def second_moment(m, log_s):
        return pv.simulate(guide, m, log_s).retval ** 2

    def grads(program, seed):
        keys = jax.random.split(jax.random.key(seed), 20_000)
        grad = lambda k: jnp.stack(program.grad(k, 0.5, -0.3, argnums=(0, 1)))  # noqa: E731
        return jax.jit(jax.vmap(grad))(keys)

    exact = np.array([2 * 0.5, 2 * math.exp(-0.6)])
    pathwise = grads(second_moment, 8)
    score = grads(pv.with_strategies(second_moment, {"z": pv.reinforce}), 9)
    for draws in (pathwise, score):
        sem = np.asarray(draws).std(0, ddof=1) / np.sqrt(draws.shape[0])
        assert np.all(np.abs((np.asarray(draws).mean(0) - exact) / sem) < 4.0)
    assert np.all(np.asarray(score).std(0) > 1.5 * np.asarray(pathwise).std(0))


# Choice maps and densities against genjax's own.
@genjax.gen
def nested_inner(loc):
    k = genjax.categorical(jnp.array([0.1, 0.5, -0.2])) @ "k"
    return genjax.normal(loc + k, 0.5) @ "y"


@genjax.gen
def nested_model(loc):
    heads = genjax.flip(0.3) @ "heads"
    w = genjax.multivariate_normal(jnp.zeros(2), jnp.array([[1.0, 0.3], [0.3, 2.0]])) @ "w"
    y = nested_inner(loc + jnp.where(heads, 1.0, 0.0)) @ "inner"
    return genjax.poisson(3.0) @ "n" + y + jnp.sum(w)


KEYS = jax.random.split(jax.random.key(0), 6)


def _round_trip(genjax_fn, *args):
    """For each key: (our log density of genjax's draw, genjax's), (genjax's log density of our
    draw, ours), each pair computed under jit, with the converted choices' dtypes."""
    gf = pv.interop.genjax(genjax_fn)

    def one(key):
        genjax_trace = genjax.seed(genjax_fn.simulate)(key, *args)
        theirs = pv.interop.trace_from_genjax(genjax_trace)
        ours = gf.simulate(key, *args)
        as_genjax = pv.interop.choices_to_genjax(genjax_fn, ours.choices, *args)
        pairs = (
            (gf.assess(theirs.choices, *args), (theirs.score, genjax_trace.get_retval())),
            (genjax_fn.assess(as_genjax, *args), (ours.score, ours.retval)),
        )
        return pairs, theirs.choices, as_genjax

    pairs, theirs, as_genjax = jax.jit(jax.vmap(one))(KEYS)
    for (logp, retval), (expected_logp, expected_retval) in pairs:
        np.testing.assert_allclose(logp, expected_logp, rtol=1e-4, atol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     retval, expected_retval)
    return theirs, as_genjax


def test_densities_and_choice_maps_agree_with_genjax():
    theirs, as_genjax = _round_trip(nested_model, 0.2)
    assert sorted(theirs) == ["heads", "inner", "n", "w"]
    assert sorted(theirs["inner"]) == ["k", "y"]
    # genjax's booleans (flip) and TFP's float counts (Poisson) are integers in progvi's choices
    assert theirs["heads"].dtype == jnp.int32 and as_genjax["heads"].dtype == jnp.bool_
    assert theirs["n"].dtype == jnp.int32 and as_genjax["n"].dtype == jnp.float32
    assert theirs["w"].shape == (len(KEYS), 2)


def test_generate_weight_is_genjax_density_of_the_constraints():
    gf = pv.interop.genjax(nested_model)

    @jax.jit
    def weights(key):
        reference = gf.simulate(key, 0.2).choices
        constraints = {"heads": reference["heads"], "inner": {"y": reference["inner"]["y"]}}
        tr, log_w = gf.generate(jax.random.fold_in(key, 1), constraints, 0.2)
        theirs = pv.interop.choices_to_genjax(gf, tr.choices, 0.2)
        # log p(heads) + log p(y | k): genjax's density of the inner call less that of its k.
        loc = 0.2 + jnp.where(theirs["heads"], 1.0, 0.0)
        expected = (genjax.flip.logpdf(theirs["heads"], 0.3)
                    + nested_inner.assess(theirs["inner"], loc)[0]
                    - genjax.categorical.logpdf(theirs["inner"]["k"], jnp.array([0.1, 0.5, -0.2])))
        return log_w, expected, tr.choices["inner"]["y"] - reference["inner"]["y"]

    log_w, expected, moved = weights(KEYS[0])
    np.testing.assert_allclose(log_w, expected, rtol=1e-5)
    assert moved == 0.0


# genjax distribution, arguments (by position and by name as TFP takes them).
DISTRIBUTIONS = [
    (genjax.normal, (0.3, 1.2), {}),
    (genjax.bernoulli, (0.4,), {}),
    (genjax.bernoulli, (), {"probs": 0.3}),
    (genjax.flip, (0.3,), {}),
    (genjax.categorical, (jnp.array([0.2, -1.0, 0.5]),), {}),
    (genjax.beta, (2.0, 3.0), {}),
    (genjax.uniform, (-1.0, 2.0), {}),
    (genjax.exponential, (1.5,), {}),
    (genjax.poisson, (3.0,), {}),
    (genjax.multivariate_normal, (jnp.array([0.0, 1.0]), jnp.array([[2.0, 0.5], [0.5, 1.0]])), {}),
    (genjax.dirichlet, (jnp.array([1.0, 2.0, 3.0]),), {}),
    (genjax.binomial, (10.0,), {"probs": 0.3}),
    (genjax.gamma, (2.0, 1.5), {}),
    (genjax.log_normal, (0.2, 0.7), {}),
    (genjax.student_t, (3.0, 0.5, 2.0), {}),
    (genjax.laplace, (0.5, 2.0), {}),
    (genjax.half_normal, (1.5,), {}),
    (genjax.inverse_gamma, (3.0, 2.0), {}),
    (genjax.weibull, (1.5, 2.0), {}),
    (genjax.cauchy, (0.5, 2.0), {}),
    (genjax.chi2, (3.0,), {}),
    (genjax.multinomial, (5.0,), {"probs": jnp.array([0.2, 0.3, 0.5])}),
    (genjax.negative_binomial, (4.0,), {"probs": 0.3}),
    (genjax.distributions.geometric, (), {"probs": 0.3}),
    (genjax.normal_reparam, (0.3, 1.2), {}),
    (genjax.multivariate_normal_diag_reparam, (jnp.zeros(2), jnp.array([1.0, 2.0])), {}),
]


@pytest.mark.parametrize("gen_dist, args, kwargs", DISTRIBUTIONS,
                         ids=[f"{d.name.value}-{i}" for i, (d, _, _) in enumerate(DISTRIBUTIONS)])
def test_each_distribution_has_genjax_density(gen_dist, args, kwargs):
    # Values drawn by progvi (numpyro) and scored by genjax (TFP): eager, so that only numpyro's
    # sampler is compiled.
    @genjax.gen
    def one():
        return gen_dist(*args, **kwargs) @ "v"

    gf = pv.interop.genjax(one)
    for key in KEYS[:2]:
        ours = gf.simulate(key)
        genjax_logp, _ = one.assess(pv.interop.choices_to_genjax(one, ours.choices))
        np.testing.assert_allclose(ours.score, genjax_logp, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gf.assess(ours.choices)[0], genjax_logp, rtol=1e-4, atol=1e-5)


COV = jnp.array([[1.0, 0.3], [0.3, 2.0]])
# genjax's ADEV forms: (distribution, arguments, a value, the strategy progvi takes from it).
ADEV_FORMS = [
    (genjax.normal_reparam, (0.3, 1.2), 0.5, pv.reparam),
    (genjax.normal_reinforce, (0.3, 1.2), 0.5, pv.reinforce),
    (genjax.uniform_reparam, (-1.0, 2.0), 0.5, pv.reparam),
    (genjax.uniform_reinforce, (-1.0, 2.0), 0.5, pv.reinforce),
    (genjax.flip_reinforce, (0.3,), True, pv.reinforce),
    (genjax.multivariate_normal_reparam, (jnp.zeros(2), COV), jnp.array([0.5, -1.0]), pv.reparam),
    (genjax.multivariate_normal_reinforce, (jnp.zeros(2), COV), jnp.array([0.5, -1.0]),
     pv.reinforce),
    (genjax.multivariate_normal_diag_reparam, (jnp.zeros(2), jnp.array([1.0, 2.0])),
     jnp.array([0.5, -1.0]), pv.reparam),
    (FLIP_ENUM, (0.3,), True, pv.enum),
    (genjax.core.distribution(genjax.flip_mvd, genjax.flip.logpdf), (0.3,), True, pv.mvd),
    (genjax.core.distribution(genjax.categorical_enum_parallel, genjax.categorical.logpdf),
     (jnp.array([0.2, -1.0, 0.5]),), 2, pv.enum_parallel),
    (genjax.normal, (0.3, 1.2), 0.5, None),
]


@pytest.mark.parametrize("gen_dist, args, value, strategy", ADEV_FORMS,
                         ids=[f"form-{i}" for i in range(len(ADEV_FORMS))])
def test_genjax_adev_forms_name_their_strategy_and_keep_their_density(gen_dist, args, value,
                                                                      strategy):
    from progvi.interop._genjax_distributions import convert

    converted = convert(gen_dist, args, {}, "the test's site")
    assert converted.strategy is strategy
    expected = gen_dist.logpdf(jnp.asarray(value), *args)
    ours = jnp.sum(converted.dist.log_prob(jnp.asarray(value).astype(
        jnp.int32 if converted.dist.support.is_discrete else jnp.float32)))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_a_genjax_function_nested_in_a_pv_gen_function():
    inner = pv.interop.genjax(genjax_guide)

    @pv.gen
    def outer(params):
        pv.sample("q", inner(params))
        return pv.sample("extra", dist.Normal(0.0, 1.0))

    tr = outer.simulate(KEYS[2], PARAMS)
    assert sorted(tr.choices["q"]) == ["b", "z"]

    @pv.expectation
    def score(params):
        return pv.simulate(outer, params).score

    eqns = score.trace(PARAMS).jaxpr.eqns
    assert [e.params["address"] for e in eqns if "address" in e.params] == ["q/b", "q/z", "extra"]


@genjax.gen
def point(m, s):
    b = genjax.flip(0.3) @ "b"
    return genjax.normal(m + b, s) @ "x"


@genjax.gen
def plate(ms):
    return point.vmap(in_axes=(0, None))(ms, 1.0) @ "points"


@genjax.gen
def step(carry, x):
    z = genjax.normal(carry + x, 1.0) @ "z"
    return z, 2.0 * z


def test_vmap_and_scan_are_progvi_combinators_with_genjax_densities():
    assert isinstance(pv.interop.genjax(point.vmap(in_axes=(0, None))), Vmap)
    assert isinstance(pv.interop.genjax(genjax.Scan(step, genjax.const(3))), Scan)
    theirs, _ = _round_trip(plate, jnp.arange(3.0))
    assert theirs["points"]["b"].shape == (len(KEYS), 3)
    theirs, _ = _round_trip(genjax.Scan(step, genjax.const(4)), 0.5, jnp.arange(4.0))
    assert theirs["z"].shape == (len(KEYS), 4)


@genjax.gen
def one_mean(m, log_s):
    return genjax.normal(m, jnp.exp(log_s)) @ "z"


@genjax.gen
def means(ms, log_s):
    return one_mean.vmap(in_axes=(0, None))(ms, log_s) @ "zs"


@pytest.mark.parametrize("strategy", [pv.reparam, pv.reinforce], ids=lambda s: s.name)
def test_gradient_through_a_genjax_vmap_is_unbiased(strategy):
    # E[sum_i z_i^2] = sum_i m_i^2 + n s^2 with z_i ~ N(m_i, s).
    guide = pv.interop.genjax(means)

    @pv.expectation
    def second_moment(ms, log_s):
        return jnp.sum(pv.simulate(guide, ms, log_s).retval ** 2)

    program = pv.with_strategies(second_moment, {"zs/z": strategy})
    ms, log_s = jnp.array([0.5, -1.0, 0.2]), jnp.array(-0.3)
    keys = jax.random.split(jax.random.key(10), 20_000)
    grads = jax.jit(jax.vmap(lambda k: program.grad(k, ms, log_s, argnums=(0, 1))))(keys)
    exact = {"ms": 2 * ms, "log_s": 2 * 3 * jnp.exp(2 * log_s)}
    for name, draws in zip(exact, grads, strict=True):
        draws = np.asarray(draws, np.float64)
        sem = draws.std(0, ddof=1) / np.sqrt(draws.shape[0])
        assert np.all(sem > 1e-6), f"{name}: the estimates do not vary"
        z = (draws.mean(0) - np.asarray(exact[name])) / sem
        assert np.all(np.abs(z) < 4.0), f"{name}: z = {z}"


def test_what_cannot_be_reinterpreted_is_named():
    @genjax.gen
    def repeated():
        return point.repeat(3)(0.0, 1.0) @ "points"

    match = r"'points' in repeated is a genjax Vmap with axis_size.*jnp\.arange"
    with pytest.raises(pv.interop.GenJAXError, match=match):
        pv.interop.genjax(repeated).simulate(KEYS[0])

    @genjax.gen
    def vmapped_distribution(ms):
        return genjax.normal.vmap(in_axes=(0, None))(ms, 1.0) @ "xs"

    match = r"'xs' in vmapped_distribution is a genjax Vmap of a distribution.*@genjax\.gen"
    with pytest.raises(pv.interop.GenJAXError, match=match):
        pv.interop.genjax(vmapped_distribution).simulate(KEYS[0], jnp.zeros(3))
    with pytest.raises(pv.interop.GenJAXError, match=r"genjax Cond.*jnp\.where"):
        pv.interop.genjax(point.cond(point))
    with pytest.raises(pv.interop.GenJAXError, match=r"genjax Distribution.*@genjax\.gen"):
        pv.interop.genjax(genjax.normal)

    custom = genjax.core.distribution(lambda m: m, lambda v, m: -((v - m) ** 2), name="custom")

    @genjax.gen
    def uses_custom():
        return custom(0.0) @ "c"

    with pytest.raises(pv.interop.GenJAXError, match=r"'c' in uses_custom.*'custom'"):
        pv.interop.genjax(uses_custom).simulate(KEYS[0])

    @genjax.gen
    def keyword_call():
        return point.T(m=0.0) @ "p"

    with pytest.raises(pv.interop.GenJAXError, match=r"keyword arguments \['m'\].*by position"):
        pv.interop.genjax(keyword_call).simulate(KEYS[0])
    with pytest.raises(TypeError, match=r"needs a @genjax\.gen function, got function"):
        pv.interop.genjax(lambda: None)


def test_errors_of_progvi_apply_to_genjax_functions():
    gf = pv.interop.genjax(genjax_model)
    with pytest.raises(pv.ChoiceError, match=r"no value is given at 'z'"):
        gf.assess({"b": 1, "x": 0.0})
    with pytest.raises(pv.ChoiceError, match=r"at 'y', but genjax_model samples no such"):
        gf.assess({"b": 1, "z": 0.0, "x": 0.0, "y": 1.0})
    with pytest.raises(pv.ChoiceError, match=r"at 'typo', but nested_model samples no such"):
        pv.interop.choices_to_genjax(nested_model, {"typo": 1.0}, 0.2)

    @genjax.gen
    def twice():
        genjax.normal(0.0, 1.0) @ "a"
        return genjax.normal(0.0, 1.0) @ "a"

    with pytest.raises(pv.AddressError, match=r"'a' is sampled twice in twice"):
        pv.interop.genjax(twice).simulate(KEYS[0])
    # genjax's handler stack is left as it was, even after an error.
    assert genjax.core.handler_stack == []


def test_importing_progvi_does_not_import_genjax():
    code = "import sys, progvi; print('genjax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.stdout.strip() == "False"


def test_missing_genjax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "genjax", None)
    with pytest.raises(ImportError, match=r'pip install "progvi\[genjax\]"'):
        pv.interop.genjax(genjax_model)


# The noisy cone of examples/cone.py, written in genjax: the same addresses, so the same keys
# draw the same values, and the ELBO's estimates and gradients equal the pv.gen version's.
@genjax.gen
def genjax_cone():
    x = genjax.normal_reparam(0.0, 10.0) @ "x"
    y = genjax.normal_reparam(0.0, 10.0) @ "y"
    r2 = x**2 + y**2
    genjax.normal_reparam(r2, 0.1 + r2 / 100.0) @ "z"


@genjax.gen
def genjax_gaussian(phi):
    genjax.normal_reparam(phi["mean"][0], jnp.exp(phi["log_scale"][0])) @ "x"
    genjax.normal_reparam(phi["mean"][1], jnp.exp(phi["log_scale"][1])) @ "y"


def test_the_cone_in_genjax_estimates_what_the_pv_gen_cone_does():
    spec = importlib.util.spec_from_file_location(
        "cone", pathlib.Path(__file__).resolve().parents[2] / "examples" / "cone.py")
    cone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cone)
    phi = {"mean": jnp.array([1.0, 0.5]), "log_scale": jnp.array([0.2, -0.4])}
    model, guide = pv.interop.genjax(genjax_cone), pv.interop.genjax(genjax_gaussian)

    def elbo(m, g):
        return pv.expectation(lambda p: pv.elbo(m, g, cone.OBS, guide_args=(p,)))

    keys = jax.random.split(jax.random.key(11), 16)
    ours, reference = (jax.jit(jax.vmap(lambda k, e=e: e.value_and_grad(k, phi)))(keys)
                       for e in (elbo(model, guide), elbo(cone.cone, cone.gaussian)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 ours, reference)
    assert float(jnp.std(ours[0])) > 0.0
