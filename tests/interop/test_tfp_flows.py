"""Normalizing flows from TFP bijectors as variational families and as noise distributions.

The flows are written as TFP users write them: a `TransformedDistribution` built inside the
program from the objective's parameters, its RealNVP and masked autoregressive layers given a
shift-and-log-scale function that closes over its network's weights. An affine flow is a Gaussian,
so its family must give the numpyro Gaussian's estimates and gradients key for key; the ELBO
gradients of the nonlinear flows are compared with the exact gradient of the ELBO computed by
Gauss-Hermite quadrature over the flow's base noise (the ELBO is E_eps[log p(T(eps)) -
log q(T(eps))]), within four standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

import progvi as pv

tfd, tfb = tfp.distributions, tfp.bijectors

NUM = 5_000
Z_MAX = 4.0
OBS = {"x": 1.0}


def check_unbiased(samples, exact):
    for (path, draws), target in zip(jax.tree_util.tree_leaves_with_path(samples),
                                     jax.tree.leaves(exact), strict=True):
        draws, target = np.asarray(draws, np.float64), np.asarray(target, np.float64)
        mean, std = draws.mean(0), draws.std(0, ddof=1)
        assert np.all(std > 1e-5), f"{path}: the estimates do not vary"
        z = (mean - target) / (std / np.sqrt(draws.shape[0]))
        assert np.all(np.abs(z) < Z_MAX), f"{path}: mean {mean} vs exact {target}: z = {z}"


def standard_normal():
    return tfd.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))


def affine(p):
    return tfb.Chain([tfb.Shift(p["loc"]), tfb.Scale(jnp.exp(p["log_scale"]))])


def shift_and_log_scale(w):
    """A RealNVP coupling network: closes over its weights, as TFP's examples write it."""

    def fn(x, output_units, **kwargs):
        h = jnp.tanh(x @ w["w1"] + w["b1"])
        out = h @ w["w2"] + w["b2"]
        return out[..., :output_units], out[..., output_units:]

    return fn


def made(w):
    """A two-dimensional autoregressive network: output 1 depends on input 0, output 0 on none."""

    def fn(x):
        h = jnp.tanh(x[..., :1] * w["w1"] + w["b1"])
        out = h @ w["w2"]
        first = jnp.broadcast_to(w["c"], (*x.shape[:-1], 2))
        return (jnp.stack([first[..., 0], out[..., 0]], -1),
                jnp.stack([first[..., 1], out[..., 1]], -1))

    return fn


def real_nvp(p):
    return tfd.TransformedDistribution(standard_normal(), tfb.Chain([
        affine(p),
        tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=shift_and_log_scale(p["nvp1"])),
        tfb.Permute([1, 0]),
        tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=shift_and_log_scale(p["nvp2"])),
    ]))


def maf(p):
    return tfd.TransformedDistribution(standard_normal(), tfb.Chain([
        affine(p), tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made(p["made"]))]))


def iaf(p):
    return tfd.TransformedDistribution(standard_normal(), tfb.Chain([
        affine(p), tfb.Invert(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made(p["made"])))
    ]))


def _net(key, hidden=6, scale=0.4):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w1": scale * jax.random.normal(k1, (1, hidden)), "b1": 0.1 * jnp.arange(hidden),
            "w2": scale * jax.random.normal(k2, (hidden, 2)),
            "b2": 0.1 * jax.random.normal(k3, (2,))}


def _made(key, hidden=5, scale=0.5):
    k1, k2 = jax.random.split(key)
    return {"w1": scale * jax.random.normal(k1, (hidden,)), "b1": 0.1 * jnp.arange(hidden),
            "w2": scale * jax.random.normal(k2, (hidden, 2)), "c": jnp.array([0.2, -0.3])}


BASE = {"loc": jnp.array([0.3, -0.2]), "log_scale": jnp.array([-0.3, 0.2])}
FLOWS = {
    "real_nvp": (real_nvp, dict(BASE, nvp1=_net(jax.random.key(1)), nvp2=_net(jax.random.key(2)))),
    "maf": (maf, dict(BASE, made=_made(jax.random.key(3)))),
    "iaf": (iaf, dict(BASE, made=_made(jax.random.key(4)))),
}


@pv.gen
def model():
    z = pv.sample("z", nd.Normal(jnp.zeros(2), 1.0).to_event(1))
    pv.sample("x", nd.Normal(z[0] + 0.5 * z[1] ** 2, 0.7))


def log_joint(z):
    """log p(z, x = 1) of `model`, vectorized over z of shape (..., 2)."""
    prior = nd.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return prior + nd.Normal(z[..., 0] + 0.5 * z[..., 1] ** 2, 0.7).log_prob(OBS["x"])


def family(make):
    @pv.gen
    def guide(p):
        pv.sample("z", make(p))

    return guide


def elbo_program(make):
    guide = family(make)

    @pv.expectation
    def elbo(p):
        return pv.elbo(model, guide, OBS, guide_args=(p,))

    return elbo


def quadrature_elbo(make, p, nodes=24):
    """E_eps[log p(T(eps)) - log q(T(eps))] by a Gauss-Hermite product rule over eps ~ N(0, I)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    eps = jnp.asarray(np.stack(np.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2), jnp.float32)
    weights = jnp.asarray(np.outer(w, w).reshape(-1), jnp.float32)
    flow = make(p)
    z = flow.bijector.forward(eps)
    return jnp.sum(weights * (log_joint(z) - flow.log_prob(z)))


def sample_grads(program, seed, params):
    keys = jax.random.split(jax.random.key(seed), NUM)
    return jax.jit(jax.vmap(lambda k: program.grad(k, params)))(keys)


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_family_elbo_gradient_reaches_the_weights_and_is_unbiased(name):
    make, params = FLOWS[name]
    exact = jax.jit(jax.grad(lambda p: quadrature_elbo(make, p)))(params)
    value = elbo_program(make).estimate(jax.random.key(0), params)
    assert np.isfinite(value)
    check_unbiased(sample_grads(elbo_program(make), 7, params), exact)


def test_the_quadrature_elbo_of_an_affine_flow_is_the_gaussian_closed_form():
    # The exact side of the test above, checked where a closed form exists: q = N(m, diag s^2),
    # with a = x - z0 - z1^2 / 2, E[a] = x - m0 - (m1^2 + s1^2) / 2 and
    # Var[a] = s0^2 + m1^2 s1^2 + s1^4 / 2.
    make = lambda p: tfd.TransformedDistribution(standard_normal(), affine(p))
    m, s = np.asarray(BASE["loc"], np.float64), np.exp(np.asarray(BASE["log_scale"], np.float64))
    mean_a = OBS["x"] - m[0] - 0.5 * (m[1] ** 2 + s[1] ** 2)
    var_a = s[0] ** 2 + m[1] ** 2 * s[1] ** 2 + 0.5 * s[1] ** 4
    prior = -np.log(2 * np.pi) - 0.5 * np.sum(m**2 + s**2)
    likelihood = -0.5 * np.log(2 * np.pi * 0.49) - (var_a + mean_a**2) / (2 * 0.49)
    entropy = np.sum(np.log(s)) + np.log(2 * np.pi * np.e)
    value = jax.jit(lambda p: quadrature_elbo(make, p))(BASE)
    np.testing.assert_allclose(value, prior + likelihood + entropy, rtol=1e-5)


def _gaussian_guide(full):
    @pv.gen
    def guide(p):
        if full:
            pv.sample("z", nd.MultivariateNormal(p["loc"], scale_tril=p["tril"]))
        else:
            pv.sample("z", nd.Normal(p["loc"], jnp.exp(p["log_scale"])).to_event(1))

    return guide


def _affine_guide(full):
    @pv.gen
    def guide(p):
        bijector = (tfb.Chain([tfb.Shift(p["loc"]), tfb.ScaleMatvecTriL(p["tril"])]) if full
                    else affine(p))
        pv.sample("z", tfd.TransformedDistribution(standard_normal(), bijector))

    return guide


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
def test_an_affine_flow_is_the_gaussian_family_key_for_key(full, objective):
    params = dict(BASE, tril=jnp.array([[0.8, 0.0], [0.3, 1.2]]))

    def program(guide):
        @pv.expectation
        def loss(p):
            if objective == "elbo":
                return pv.elbo(model, guide, OBS, guide_args=(p,))
            return pv.iwae(model, guide, OBS, 3, guide_args=(p,))

        return loss

    flow, gauss = program(_affine_guide(full)), program(_gaussian_guide(full))
    used = ("loc", "tril") if full else ("loc", "log_scale")
    for seed in range(2):
        (v1, g1), (v2, g2) = [p.value_and_grad(jax.random.key(seed), params) for p in (flow, gauss)]
        np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-5)
        for k in used:
            # TFP's ScaleMatvecTriL reads the lower triangle only: the upper one gets no gradient.
            mask = np.tril(np.ones((2, 2))) if k == "tril" else 1.0
            np.testing.assert_allclose(g1[k] * mask, g2[k] * mask, rtol=1e-4, atol=1e-5)


# Flows as the noise of an unnormalized model.


def log_f(x, theta):
    """An unnormalized banana: -(x0 - m)^2 / 2 - (x1 - x0^2 / 2)^2 / (2 * 0.5^2)."""
    return -0.5 * (x[..., 0] - theta["m"]) ** 2 - 2.0 * (x[..., 1] - 0.5 * x[..., 0] ** 2) ** 2


DATA = jax.random.normal(jax.random.key(9), (32, 2)) * jnp.array([1.0, 0.5])
COVER = {"loc": jnp.array([0.0, 0.5]), "log_scale": jnp.log(jnp.array([2.0, 2.0]))}


def _nll(noise, loss):
    @pv.expectation
    def nll(theta, phi):
        return pv.unnormalized.nll(log_f, DATA, noise(phi), model_args=(theta,),
                                   estimator=pv.plug_in(num_samples=16), noise_loss=loss,
                                   noise_samples=16)

    return nll


@pytest.mark.parametrize("loss", ["variance", "forward_kl"])
def test_an_affine_flow_noise_is_the_diagonal_gaussian_noise_key_for_key(loss):
    # A noise's K draws are one site with a sample shape, which the adapter draws with split
    # keys: the same for every TFP distribution, not numpyro's batched draw. So the reference is
    # TFP's own diagonal Gaussian, not a flow.
    flow = _nll(lambda phi: tfd.TransformedDistribution(standard_normal(), affine(phi)), loss)
    gauss = _nll(lambda phi: tfd.MultivariateNormalDiag(phi["loc"], jnp.exp(phi["log_scale"])),
                 loss)
    theta = {"m": jnp.asarray(0.4)}
    for seed in range(2):
        key = jax.random.key(seed)
        (v1, g1), (v2, g2) = [p.value_and_grad(key, theta, COVER, argnums=(0, 1))
                              for p in (flow, gauss)]
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert np.all(np.abs(g1[1]["log_scale"]) > 0)  # the noise loss trains the noise


def test_a_real_nvp_noise_learns_through_its_networks_weights():
    """With the affine part held fixed, only the coupling networks can lower log E_q[(f/q)^2]."""

    def noise(phi):
        layers = [affine(COVER)]
        for w in (phi["nvp1"], phi["nvp2"]):
            layers += [tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=shift_and_log_scale(w)),
                       tfb.Permute([1, 0])]
        return tfd.TransformedDistribution(standard_normal(), tfb.Chain(layers))

    theta = {"m": jnp.asarray(0.4)}
    zero = lambda key: jax.tree.map(lambda v: 0.0 * v, _net(key, hidden=16))
    phi0 = {"nvp1": zero(jax.random.key(1)), "nvp2": zero(jax.random.key(2))}
    phi0["nvp1"]["w1"] = 0.5 * jax.random.normal(jax.random.key(3), (1, 16))
    phi0["nvp2"]["w1"] = 0.5 * jax.random.normal(jax.random.key(4), (1, 16))

    @pv.expectation
    def second_moment(phi):
        """log E_q[(f/q)^2] (the quantity noise_loss="variance" minimizes), one draw per key."""
        y = pv.sample("y", noise(phi))
        return jnp.exp(2 * (log_f(y, theta) - noise(phi).log_prob(y)))

    nll = _nll(noise, "variance")
    result = pv.fit(jax.random.key(0), pv.expectation(lambda phi: nll(theta, phi)), phi0,
                    optax.adam(0.02), direction="minimize", num_steps=150, progress=False)
    keys = jax.random.split(jax.random.key(5), 5_000)
    before, after = [jnp.log(jnp.mean(jax.jit(jax.vmap(
        lambda k, p=p: second_moment.estimate(k, p)))(keys))) for p in (phi0, result.params)]
    assert float(after) < float(before) - 0.3, (before, after)
    assert float(jnp.abs(result.params["nvp1"]["w2"]).max()) > 1e-2  # the zero layer moved
