"""Subsampling plates and enumerated sites of NumPyro models, against numpyro: minibatch
gradients whose mean over subsamples is the full-batch gradient and which equal Trace_ELBO's for
the same indices; a Gaussian mixture whose assignments are summed out, equal to TraceEnum_ELBO's
loss and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, autoguide

import progvi as pv

N, B = 6, 2
DATA = jnp.array([0.3, -1.2, 2.0, 0.7, 1.5, -0.4])


def local_model(y, batch):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", N, subsample_size=batch):
        y_batch = numpyro.subsample(y, event_dim=0)
        theta = numpyro.sample("theta", dist.Normal(mu, 1.0))
        numpyro.sample("obs", dist.Normal(theta, 0.5), obs=y_batch)


MODEL = pv.interop.numpyro(local_model)
# An autoguide takes its plates' subsample sizes from the run that initialises it (as in
# numpyro): one guide for minibatches of B, one for the full batch; the params are full-size.
GUIDE = pv.interop.numpyro(autoguide.AutoDelta(local_model), params=True)
FULL_GUIDE = pv.interop.numpyro(autoguide.AutoDelta(local_model), params=True)
FULL_GUIDE.init_params(jax.random.key(0), DATA, N)
PARAMS = jax.tree.map(lambda p: p + 0.3 * jnp.sin(jnp.arange(p.size).reshape(p.shape) + 1.0),
                      GUIDE.init_params(jax.random.key(0), DATA, B))


@pv.expectation
def minibatch_elbo(params, idx):
    model, guide = MODEL.with_subsample({"data": idx}), GUIDE.with_subsample({"data": idx})
    return pv.elbo(model, guide, {}, model_args=(DATA, B), guide_args=(params, DATA, B))


@pv.expectation
def full_elbo(params):
    return pv.elbo(MODEL, FULL_GUIDE, {}, model_args=(DATA, N), guide_args=(params, DATA, N))


def test_only_the_plate_sites_are_scaled():
    idx = jnp.array([4, 1])
    choices = {"mu": 0.2, "theta": jnp.array([0.5, -0.1])}
    logp, _ = MODEL.with_subsample({"data": idx}).assess(choices, DATA, B)
    prior = dist.Normal(0.0, 1.0).log_prob(0.2)
    local = (dist.Normal(0.2, 1.0).log_prob(choices["theta"])
             + dist.Normal(choices["theta"], 0.5).log_prob(DATA[idx]))
    np.testing.assert_allclose(logp, prior + N / B * jnp.sum(local), rtol=1e-6)
    expected, _ = numpyro.infer.util.log_density(
        handlers.substitute(local_model, data={"data": idx}), (DATA, B), {}, choices)
    np.testing.assert_allclose(logp, expected, rtol=1e-6)


def test_minibatch_gradient_equals_trace_elbo_for_the_same_indices():
    svi = SVI(local_model, autoguide.AutoDelta(local_model), optax.sgd(0.1), Trace_ELBO())
    svi.init(jax.random.key(0), DATA, B)
    idx = jnp.array([5, 2])

    def numpyro_loss(params):
        fixed = {"data": idx}
        return Trace_ELBO().loss(jax.random.key(1), svi.constrain_fn(params),
                                 handlers.substitute(local_model, data=fixed),
                                 handlers.substitute(svi.guide, data=fixed), DATA, B)

    value, grads = minibatch_elbo.value_and_grad(jax.random.key(2), PARAMS, idx)
    np.testing.assert_allclose(value, -numpyro_loss(PARAMS), rtol=1e-5)
    for ours, theirs in zip(jax.tree.leaves(grads), jax.tree.leaves(
            jax.tree.map(jnp.negative, jax.grad(numpyro_loss)(PARAMS))), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_minibatch_gradient_is_unbiased_for_the_full_batch_gradient():
    exact = full_elbo.grad(jax.random.key(3), PARAMS)
    keys = jax.random.split(jax.random.key(4), 4000)
    draws = jax.vmap(lambda k: jax.random.choice(k, N, (B,), replace=False))(keys)
    grads = jax.jit(jax.vmap(lambda k, i: minibatch_elbo.grad(k, PARAMS, i)))(keys, draws)
    for name in exact:
        g = np.asarray(grads[name], np.float64).reshape(len(keys), -1)
        sem = g.std(0, ddof=1) / np.sqrt(len(keys))
        assert np.all(sem > 1e-4), f"{name}: the minibatch gradients do not vary"
        z = (g.mean(0) - np.asarray(exact[name]).reshape(-1)) / sem
        assert np.all(np.abs(z) < 4.0), (name, z)


def test_subsampling_without_indices_names_the_plate_and_the_fix():
    with pytest.raises(pv.interop.ModelError, match=r"plate 'data'.*with_subsample"):
        MODEL.assess({"mu": 0.0, "theta": jnp.zeros(B)}, DATA, B)
    with pytest.raises(pv.interop.ModelError, match=r"indices.*shape \(3,\)"):
        MODEL.with_subsample({"data": jnp.arange(3)}).assess(
            {"mu": 0.0, "theta": jnp.zeros(B)}, DATA, B)


# A Gaussian mixture with its assignments enumerated (NumPyro's Gaussian-mixture tutorial).
K = 3
MIXTURE_DATA = jnp.array([0.0, 1.0, 10.0, 11.0, 12.0, -5.0, -4.5, 0.5, 10.5, -6.0])


def mixture(data):
    weights = numpyro.sample("weights", dist.Dirichlet(0.5 * jnp.ones(K)))
    with numpyro.plate("components", K):
        locs = numpyro.sample("locs", dist.Normal(0.0, 10.0))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with numpyro.plate("data", len(data)):
        assignment = numpyro.sample("assignment", dist.Categorical(weights),
                                    infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def _mixture_guide():
    return autoguide.AutoDelta(handlers.block(mixture, hide=["assignment"]))


def test_enumerated_mixture_matches_trace_enum_elbo_loss_and_gradient():
    svi = SVI(mixture, _mixture_guide(), optax.sgd(0.1), TraceEnum_ELBO(max_plate_nesting=1))
    svi.init(jax.random.key(0), MIXTURE_DATA)
    guide = pv.interop.numpyro(_mixture_guide(), params=True)
    target = pv.interop.numpyro(mixture)
    params = guide.init_params(jax.random.key(0), MIXTURE_DATA)
    params = jax.tree.map(lambda p: p + 0.2 * jnp.cos(jnp.arange(p.size).reshape(p.shape)),
                          params)

    @pv.expectation
    def elbo(params):
        return pv.elbo(target, guide, {}, model_args=(MIXTURE_DATA,),
                       guide_args=(params, MIXTURE_DATA))

    def numpyro_loss(params):
        return TraceEnum_ELBO(max_plate_nesting=1).loss(
            jax.random.key(1), svi.constrain_fn(params), mixture, svi.guide, MIXTURE_DATA)

    value, grads = elbo.value_and_grad(jax.random.key(2), params)
    loss, expected = jax.jit(jax.value_and_grad(numpyro_loss))(params)
    np.testing.assert_allclose(value, -loss, rtol=1e-5)
    for name in expected:
        np.testing.assert_allclose(grads[name], -expected[name], rtol=1e-4, atol=1e-5)
    # Summing out by hand: log Σ_k w_k N(x_i; loc_k, scale) for each datapoint.
    c = guide.constrained_params(params, MIXTURE_DATA)
    w, locs, s = (c[f"{n}_auto_loc"] for n in ["weights", "locs", "scale"])
    per_point = jax.scipy.special.logsumexp(
        jnp.log(w) + dist.Normal(locs, s).log_prob(MIXTURE_DATA[:, None]), axis=1)
    choices = {"weights": w, "locs": locs, "scale": s}
    logp, _ = target.assess(choices, MIXTURE_DATA)
    prior = (dist.Dirichlet(0.5 * jnp.ones(K)).log_prob(w)
             + jnp.sum(dist.Normal(0.0, 10.0).log_prob(locs))
             + dist.LogNormal(0.0, 2.0).log_prob(s))
    np.testing.assert_allclose(logp, prior + jnp.sum(per_point), rtol=1e-5)


def test_enumerated_guide_site_is_summed_in_the_program():
    def guide(p):
        numpyro.sample("z", dist.Bernoulli(p), infer={"enumerate": "parallel"})

    def model():
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=1.5)

    q, p_model = pv.interop.numpyro(guide), pv.interop.numpyro(model)

    @pv.expectation
    def elbo(p):
        return pv.elbo(p_model, q, {}, guide_args=(p,))

    def exact(p):
        terms = [(1 - p) * (jnp.log(0.7) + dist.Normal(0.0, 1.0).log_prob(1.5) - jnp.log(1 - p)),
                 p * (jnp.log(0.3) + dist.Normal(2.0, 1.0).log_prob(1.5) - jnp.log(p))]
        return terms[0] + terms[1]

    value, grad = elbo.value_and_grad(jax.random.key(0), 0.4)
    np.testing.assert_allclose(value, exact(0.4), rtol=1e-5)
    np.testing.assert_allclose(grad, jax.grad(exact)(0.4), rtol=1e-5)


# A global regime, enumerated, on which each datapoint's enumerated state depends.
REGIME_DATA = jnp.array([0.3, -1.2, 2.5, 0.8, 3.1, -0.4])


def regimes(params, data):
    regime = numpyro.sample("regime", dist.Bernoulli(jax.nn.sigmoid(params["r"])),
                            infer={"enumerate": "parallel"})
    state_logits = params["logits"][regime]
    with numpyro.plate("data", len(data)):
        state = numpyro.sample("state", dist.Categorical(logits=state_logits),
                               infer={"enumerate": "parallel"})
        numpyro.sample("obs", dist.Normal(params["locs"][state], 1.0), obs=data)


def regimes_by_hand(params, data):
    """log Σ_g p(g) Π_n Σ_k p(k | g) N(x_n; loc_k, 1)."""
    log_g = jnp.stack([jax.nn.log_sigmoid(-params["r"]), jax.nn.log_sigmoid(params["r"])])
    log_k = jax.nn.log_softmax(params["logits"], -1)  # (regime, state)
    emit = dist.Normal(params["locs"], 1.0).log_prob(data[:, None])  # (n, state)
    per_point = jax.scipy.special.logsumexp(log_k[:, None, :] + emit[None], axis=-1)
    return jax.scipy.special.logsumexp(log_g + per_point.sum(-1))


def test_sites_at_nested_plate_levels_are_summed_exactly():
    a, b = jax.random.split(jax.random.key(7))
    params = {"r": jnp.array(0.4), "logits": jax.random.normal(a, (2, 3)),
              "locs": 2.0 * jax.random.normal(b, (3,))}
    target = pv.interop.numpyro(regimes)

    def progvi_value(params):
        return target.assess({}, params, REGIME_DATA)[0]

    def numpyro_value(params):
        return -TraceEnum_ELBO(max_plate_nesting=1).loss(
            jax.random.key(0), {}, regimes, lambda *_: None, params, REGIME_DATA)

    value, grad = jax.jit(jax.value_and_grad(progvi_value))(params)
    for reference in (regimes_by_hand, numpyro_value):
        expected, expected_grad = jax.jit(jax.value_and_grad(reference))(params, *(
            (REGIME_DATA,) if reference is regimes_by_hand else ()))
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        for name in params:
            np.testing.assert_allclose(grad[name], expected_grad[name], rtol=1e-4, atol=1e-5)


def test_enumerated_sites_in_crossed_plates_are_refused():
    def grid(data):
        with numpyro.plate("cols", 3, dim=-1):
            col = numpyro.sample("col", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        with numpyro.plate("rows", 2, dim=-2):
            row = numpyro.sample("row", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
            with numpyro.plate("cols", 3, dim=-1):
                numpyro.sample("obs", dist.Normal(row + col, 1.0), obs=data)

    with pytest.raises(pv.interop.ModelError, match=r"\['col', 'row'\].*not nested"):
        pv.interop.numpyro(grid).assess({}, jnp.zeros((2, 3)))
