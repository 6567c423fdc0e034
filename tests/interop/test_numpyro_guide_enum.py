"""Enumerated sites of a NumPyro guide inside plates, summed out by pv.elbo per datapoint: the
loss and gradient of TraceEnum_ELBO, brute-force sums over every joint assignment, closed-form
expectations for the sites the guide still draws, subsampled plates, and the errors for what
only pv.elbo can do."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import TraceEnum_ELBO

import progvi as pv

DATA = jnp.array([-2.1, -1.7, 0.3, 1.9, 2.4, 2.2])
N, K = DATA.shape[0], 2
WEIGHTS = jnp.array([0.3, 0.7])


def mixture(data):
    locs = numpyro.sample("locs", dist.Normal(0.0, 3.0).expand([K]).to_event(1))
    with numpyro.plate("data", data.shape[0]):
        z = numpyro.sample("z", dist.Categorical(WEIGHTS))
        numpyro.sample("x", dist.Normal(locs[z], 1.0), obs=data)


def point_guide(data):
    m = numpyro.param("m", jnp.array([-1.0, 1.0]))
    numpyro.sample("locs", dist.Delta(m, event_dim=1))
    logits = numpyro.param("logits", jnp.zeros((data.shape[0], K)))
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("z", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})


MODEL = pv.interop.numpyro(mixture)
POINT_GUIDE = pv.interop.numpyro(point_guide, params=True)
PARAMS = {"m": jnp.array([-1.0, 1.5]), "logits": jax.random.normal(jax.random.key(1), (N, K))}


def _elbo(guide, data=DATA):
    @pv.expectation
    def objective(params):
        return pv.elbo(MODEL, guide, {}, model_args=(data,), guide_args=(params, data))

    return objective


def test_point_guide_matches_trace_enum_elbo_loss_and_gradient():
    def loss(params):
        return TraceEnum_ELBO(max_plate_nesting=1).loss(jax.random.key(0), params, mixture,
                                                         point_guide, DATA)

    expected_loss, expected = jax.value_and_grad(loss)(PARAMS)
    value, grads = _elbo(POINT_GUIDE).value_and_grad(jax.random.key(3), PARAMS)
    np.testing.assert_allclose(value, -expected_loss, rtol=1e-5)
    for name in PARAMS:
        np.testing.assert_allclose(grads[name], -expected[name], rtol=1e-4, atol=1e-5)


def _brute_force(params, data):
    """Σ over all K^N joint assignments of q(z) [log p(x, z, locs) - log q(z)]."""
    m, log_q = params["m"], jax.nn.log_softmax(params["logits"], -1)
    total = jnp.sum(dist.Normal(0.0, 3.0).log_prob(m))
    for z in itertools.product(range(K), repeat=data.shape[0]):
        z = jnp.array(z)
        lq = log_q[jnp.arange(data.shape[0]), z]
        log_joint = jnp.sum(jnp.log(WEIGHTS[z]) + dist.Normal(m[z], 1.0).log_prob(data))
        total = total + jnp.exp(jnp.sum(lq)) * (log_joint - jnp.sum(lq))
    return total


def test_point_guide_equals_the_sum_over_every_joint_assignment():
    data = DATA[:4]  # 16 joint assignments
    params = {"m": PARAMS["m"], "logits": PARAMS["logits"][:4]}
    value, grads = _elbo(POINT_GUIDE, data).value_and_grad(jax.random.key(0), params)
    expected, expected_grads = jax.value_and_grad(_brute_force)(params, data)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-4, atol=1e-5)


# A guide that still draws: each datapoint's w_i depends on its enumerated z_i, so it is drawn
# once for each value of z_i (a table of draws); the expectation over w has a closed form.
C = jnp.array([-1.5, 1.5])  # the model's centres of w given z


def layered(data):
    with numpyro.plate("data", data.shape[0]):
        z = numpyro.sample("z", dist.Categorical(WEIGHTS))
        w = numpyro.sample("w", dist.Normal(C[z], 1.0))
        numpyro.sample("x", dist.Normal(w, 1.0), obs=data)


def layered_guide(data):
    logits = numpyro.param("logits", jnp.zeros((data.shape[0], K)))
    mu = numpyro.param("mu", jnp.zeros(K))
    with numpyro.plate("data", data.shape[0]):
        z = numpyro.sample("z", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
        numpyro.sample("w", dist.Normal(mu[z], 1.0))


def layered_exact(params, data):
    """Σ_i Σ_k q_ik (log π_k - log q_ik + E_{w ~ N(mu_k, 1)}[log N(w; c_k, 1) + log N(x_i; w, 1)
    - log N(w; mu_k, 1)]), with E[log N(w; b, 1)] = -(log 2π + (mu - b)² + 1) / 2."""
    log_q = jax.nn.log_softmax(params["logits"], -1)
    mu = params["mu"][None, :]
    half_log_2pi = 0.5 * jnp.log(2 * jnp.pi)
    inner = (-half_log_2pi - 0.5 * ((mu - C) ** 2 + 1.0)
             - half_log_2pi - 0.5 * ((data[:, None] - mu) ** 2 + 1.0)
             + half_log_2pi + 0.5)
    return jnp.sum(jnp.exp(log_q) * (jnp.log(WEIGHTS) - log_q + inner))


def test_sites_drawn_after_an_enumerated_site_are_unbiased_for_the_exact_elbo():
    guide = pv.interop.numpyro(layered_guide, params=True)
    model = pv.interop.numpyro(layered)
    params = {"logits": jnp.array([[0.4, -0.2]] * N) * jnp.arange(1, N + 1)[:, None],
              "mu": jnp.array([-0.5, 0.8])}

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, guide, {}, model_args=(DATA,), guide_args=(params, DATA))

    keys = jax.random.split(jax.random.key(4), 2000)
    values, grads = jax.jit(jax.vmap(lambda k: elbo.value_and_grad(k, params)))(keys)
    expected, expected_grads = jax.value_and_grad(layered_exact)(params, DATA)
    assert float(jnp.std(values)) > 0.1  # w is drawn: the estimate has real variance
    se = jnp.std(values) / jnp.sqrt(len(keys))
    assert abs(float(jnp.mean(values) - expected)) < 4 * float(se)
    for name in params:
        mean, se = grads[name].mean(0), grads[name].std(0) / jnp.sqrt(len(keys))
        assert jnp.all(jnp.abs(mean - expected_grads[name]) < 4 * se + 1e-5), name


def test_subsampled_plate_scales_only_its_datapoints():
    def sub_model(data, idx):
        locs = numpyro.sample("locs", dist.Normal(0.0, 3.0).expand([K]).to_event(1))
        with numpyro.plate("data", N, subsample_size=idx.shape[0]):
            x = numpyro.subsample(data, event_dim=0)
            z = numpyro.sample("z", dist.Categorical(WEIGHTS))
            numpyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    def sub_guide(data, idx):
        m = numpyro.param("m", jnp.array([-1.0, 1.0]))
        numpyro.sample("locs", dist.Delta(m, event_dim=1))
        logits = numpyro.param("logits", jnp.zeros((N, K)))
        with numpyro.plate("data", N, subsample_size=idx.shape[0]):
            numpyro.sample("z", dist.Categorical(logits=numpyro.subsample(logits, event_dim=1)),
                           infer={"enumerate": "parallel"})

    idx = jnp.array([4, 1])

    @pv.expectation
    def elbo(params):
        model = pv.interop.numpyro(sub_model).with_subsample({"data": idx})
        guide = pv.interop.numpyro(sub_guide, params=True).with_subsample({"data": idx})
        return pv.elbo(model, guide, {}, model_args=(DATA, idx), guide_args=(params, DATA, idx))

    def by_hand(params):
        log_q = jax.nn.log_softmax(params["logits"][idx], -1)
        local = jnp.exp(log_q) * (jnp.log(WEIGHTS) - log_q
                                  + dist.Normal(params["m"], 1.0).log_prob(DATA[idx, None]))
        return jnp.sum(dist.Normal(0.0, 3.0).log_prob(params["m"])) + N / 2 * jnp.sum(local)

    value, grads = elbo.value_and_grad(jax.random.key(0), PARAMS)
    expected, expected_grads = jax.value_and_grad(by_hand)(PARAMS)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for name in PARAMS:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-4, atol=1e-5)


def test_objectives_other_than_the_elbo_refuse_plated_guide_enumeration():
    @pv.expectation
    def bound(params):
        return pv.iwae(MODEL, POINT_GUIDE, {}, 2, model_args=(DATA,), guide_args=(params, DATA))

    with pytest.raises(pv.interop.ModelError, match=r"only pv.elbo sums a guide's plated"):
        bound.estimate(jax.random.key(0), PARAMS)


def test_a_model_that_enumerates_too_is_refused():
    def enumerating(data):
        locs = numpyro.sample("locs", dist.Normal(0.0, 3.0).expand([K]).to_event(1))
        with numpyro.plate("data", data.shape[0]):
            z = numpyro.sample("z", dist.Categorical(WEIGHTS))
            y = numpyro.sample("y", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
            numpyro.sample("x", dist.Normal(locs[z] + y, 1.0), obs=data)

    @pv.expectation
    def elbo(params):
        return pv.elbo(pv.interop.numpyro(enumerating), POINT_GUIDE, {}, model_args=(DATA,),
                       guide_args=(params, DATA))

    with pytest.raises(pv.interop.ModelError, match=r"enumerates \['y'\] as well"):
        elbo.estimate(jax.random.key(0), PARAMS)


def test_a_model_that_is_not_numpyro_is_refused():
    @pv.gen
    def model(data):
        pv.sample("locs", dist.Normal(0.0, 3.0).expand([K]).to_event(1))

    @pv.expectation
    def elbo(params):
        return pv.elbo(model, POINT_GUIDE, {}, model_args=(DATA,), guide_args=(params, DATA))

    with pytest.raises(pv.interop.ModelError, match=r"is not a NumPyro model"):
        elbo.estimate(jax.random.key(0), PARAMS)


def test_a_masked_enumerated_guide_site_is_refused():
    def masked_guide(data):
        m = numpyro.param("m", jnp.array([-1.0, 1.0]))
        numpyro.sample("locs", dist.Delta(m, event_dim=1))
        logits = numpyro.param("logits", jnp.zeros((data.shape[0], K)))
        with numpyro.plate("data", data.shape[0]), numpyro.handlers.mask(mask=data > 0):
            numpyro.sample("z", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})

    with pytest.raises(pv.interop.ModelError, match=r"'z' .* is enumerated and masked"):
        _elbo(pv.interop.numpyro(masked_guide, params=True)).estimate(jax.random.key(0), PARAMS)
