"""Neural-network modules as params of grad, make_step and fit, with no partition/combine by
the user: equinox modules (with activation functions as fields) and flax.nnx modules give the
gradient of the same estimator with the arrays split out by hand, and a small VAE of each trains;
flax.linen params and plain pytrees keep working."""

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from flax import nnx

import progvi as pv

D, H, Z = 6, 8, 2
DATA = (jax.random.uniform(jax.random.key(0), (64, D)) < jnp.linspace(0.1, 0.9, D)).astype(
    jnp.float32)


def vae_elbo(encode, decode):
    """The per-datapoint ELBO of a Bernoulli VAE with Gaussian latents."""

    def elbo(x):
        out = encode(x)
        q = dist.Normal(out[:Z], jax.nn.softplus(out[Z:]) + 1e-3).to_event(1)
        z = pv.sample("z", q)
        logits = decode(z)
        log_lik = jnp.sum(dist.Bernoulli(logits=logits).log_prob(x))
        return log_lik + dist.Normal(0.0, 1.0).expand([Z]).to_event(1).log_prob(z) - q.log_prob(z)

    return elbo


class EqxVAE(eqx.Module):
    encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.encoder = eqx.nn.MLP(D, 2 * Z, H, 1, activation=jax.nn.tanh, key=k1)
        self.decoder = eqx.nn.MLP(Z, D, H, 1, activation=jax.nn.relu, key=k2)


class NnxVAE(nnx.Module):
    def __init__(self, rngs):
        self.enc1, self.enc2 = nnx.Linear(D, H, rngs=rngs), nnx.Linear(H, 2 * Z, rngs=rngs)
        self.dec1, self.dec2 = nnx.Linear(Z, H, rngs=rngs), nnx.Linear(H, D, rngs=rngs)

    def encode(self, x):
        return self.enc2(jnp.tanh(self.enc1(x)))

    def decode(self, z):
        return self.dec2(jax.nn.relu(self.dec1(z)))


@pv.expectation
def eqx_elbo(model, x):
    return vae_elbo(model.encoder, model.decoder)(x)


@pv.expectation
def nnx_elbo(model, x):
    return vae_elbo(model.encode, model.decode)(x)


def _assert_trees_close(ours, theirs):
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _fit_improves(objective, params):
    result = pv.fit(jax.random.key(1), objective, params, optax.adam(0.03), direction="maximize",
                    num_steps=400, data=DATA, batch_size=16, per_datapoint=True, progress=False)
    first, last = result.history[:30].mean(), result.history[-30:].mean()
    assert last > first + 0.3, (first, last)
    return result


def test_equinox_module_as_params():
    model = EqxVAE(jax.random.key(2))
    key, x = jax.random.key(3), DATA[0]
    grads = eqx_elbo.grad(key, model, x)
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    by_hand = jax.grad(lambda a: eqx_elbo.estimate(key, eqx.combine(a, static), x))(arrays)
    assert grads.encoder.activation is None  # no gradient for a function, as in equinox
    _assert_trees_close(grads, by_hand)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-3
    result = _fit_improves(eqx_elbo, model)
    assert result.params.encoder.activation is jax.nn.tanh  # the module comes back whole
    assert result.params.decoder.activation is jax.nn.relu
    train = pv.make_step(eqx_elbo, optax.adam(0.01), direction="maximize", per_datapoint=True)
    state = train.init(model, DATA[:8])
    state, value = jax.jit(train.step)(state, jax.random.key(4), DATA[:8])
    assert np.isfinite(value) and int(state.step) == 1


def test_flax_nnx_module_as_params():
    model = NnxVAE(nnx.Rngs(5))
    key, x = jax.random.key(6), DATA[1]
    grads = nnx_elbo.grad(key, model, x)
    graph, state = nnx.split(model)
    by_hand = jax.grad(lambda s: nnx_elbo.estimate(key, nnx.merge(graph, s), x))(state)
    _assert_trees_close(jax.tree.leaves(grads), jax.tree.leaves(by_hand))
    result = _fit_improves(nnx_elbo, model)
    assert isinstance(result.params, NnxVAE)
    out = result.params.decode(jnp.zeros(Z))
    assert out.shape == (D,)


class LinenMLP(linen.Module):
    features: int

    @linen.compact
    def __call__(self, x):
        return linen.Dense(self.features)(jnp.tanh(linen.Dense(H)(x)))


def test_flax_linen_params_and_plain_pytrees():
    encoder, decoder = LinenMLP(2 * Z), LinenMLP(D)
    params = {"enc": encoder.init(jax.random.key(7), jnp.zeros(D)),
              "dec": decoder.init(jax.random.key(8), jnp.zeros(Z))}

    @pv.expectation
    def linen_elbo(params, x):
        return vae_elbo(lambda v: encoder.apply(params["enc"], v),
                        lambda v: decoder.apply(params["dec"], v))(x)

    _fit_improves(linen_elbo, params)
    weights = {"enc": (0.3 * jax.random.normal(jax.random.key(9), (D, 2 * Z)), jnp.zeros(2 * Z)),
               "dec": (0.3 * jax.random.normal(jax.random.key(10), (Z, D)), jnp.zeros(D))}

    @pv.expectation
    def plain_elbo(w, x):
        return vae_elbo(lambda v: v @ w["enc"][0] + w["enc"][1],
                        lambda v: v @ w["dec"][0] + w["dec"][1])(x)

    _fit_improves(plain_elbo, weights)
