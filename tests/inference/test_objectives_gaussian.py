"""The reparameterized objectives on a conjugate Gaussian model, against exact answers.

Model: z ~ N(mu0, 1), x | z ~ N(z, 1), observed x = X; the posterior is N((mu0 + X) / 2, 1/2).
Guide: N(m, s). The ELBO and the HVI bound of a two-level Gaussian family are closed forms; the
IWAE and Renyi bounds with two particles, and IWHVI with two auxiliary particles, are
Gauss-Hermite quadratures over the standard normal noise of the draws (checked against the closed
form ELBO). Means of many estimates must match within four standard errors.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv

X = 1.5
MU0 = 0.3
PHI = {"m": jnp.array(0.4), "log_s": jnp.array(-0.2)}
LOG_2PI = math.log(2 * math.pi)


@pv.gen
def model(mu0):
    z = pv.sample("z", dist.Normal(mu0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def guide(phi):
    pv.sample("z", dist.Normal(phi["m"], jnp.exp(phi["log_s"])))


def program(objective, *extra, family=guide):
    return pv.expectation(
        lambda mu0, phi: objective(
            model, family, {"x": X}, *extra, model_args=(mu0,), guide_args=(phi,)
        )
    )


# -- exact answers --------------------------------------------------------------------------------


def elbo_exact(mu0, phi):
    m, s = phi["m"], jnp.exp(phi["log_s"])
    return (-LOG_2PI - 0.5 * ((m - mu0) ** 2 + s**2) - 0.5 * ((X - m) ** 2 + s**2)
            + 0.5 * (LOG_2PI + 1) + jnp.log(s))


def log_evidence(mu0):
    return dist.Normal(mu0, math.sqrt(2.0)).log_prob(X)


def hermite(dim, n):
    """Nodes and weights of E[f(e)], e ~ N(0, I_dim), on a Gauss-Hermite tensor grid."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    nodes = np.stack([g.ravel() for g in np.meshgrid(*[x] * dim, indexing="ij")], -1)
    weights = np.prod(np.meshgrid(*[w / math.sqrt(2 * math.pi)] * dim, indexing="ij"), 0).ravel()
    return jnp.asarray(nodes, jnp.float32), jnp.asarray(weights, jnp.float32)


def log_weight(mu0, phi, z):
    m, s = phi["m"], jnp.exp(phi["log_s"])
    return (dist.Normal(mu0, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(X)
            - dist.Normal(m, s).log_prob(z))


def two_particle_bound(mu0, phi, alpha=0.0, n=48):
    """E[1/(1-alpha) log mean_k w_k^(1-alpha)] over two reparameterized particles."""
    nodes, weights = hermite(2, n)
    z = phi["m"] + jnp.exp(phi["log_s"]) * nodes
    lw = (1 - alpha) * log_weight(mu0, phi, z)
    return jnp.sum(weights * (jax.nn.logsumexp(lw, 1) - math.log(2))) / (1 - alpha)


def test_the_quadrature_reproduces_the_closed_forms():
    """The exact machinery checked against itself: K = 2 with equal particles is the ELBO."""
    nodes, weights = hermite(1, 48)
    z = PHI["m"] + jnp.exp(PHI["log_s"]) * nodes[:, 0]
    np.testing.assert_allclose(jnp.sum(weights * log_weight(MU0, PHI, z)),
                               elbo_exact(MU0, PHI), rtol=1e-5)
    assert elbo_exact(MU0, PHI) < two_particle_bound(MU0, PHI) < log_evidence(MU0)
    assert two_particle_bound(MU0, PHI, 0.5) < two_particle_bound(MU0, PHI)


# -- statistics -----------------------------------------------------------------------------------


def draws(fn, seed, num):
    keys = jax.random.split(jax.random.key(seed), num)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.jit(jax.vmap(fn))(keys))


def check_unbiased(samples, exact):
    for leaf, target in zip(jax.tree.leaves(samples), jax.tree.leaves(exact), strict=True):
        target = np.asarray(target, np.float64)
        sem = leaf.std(0, ddof=1) / np.sqrt(leaf.shape[0])
        assert np.all(sem > 1e-5), "the estimates do not vary, so the test has no power"
        z = (leaf.mean(0) - target) / sem
        assert np.all(np.abs(z) < 4.0), f"mean {leaf.mean(0)} vs exact {target}: z = {z}"


def values_and_gradients(prog, seed, num=20_000, mu0=MU0, phi=PHI):
    return draws(lambda k: prog.value_and_grad(k, mu0, phi, argnums=(0, 1)), seed, num)


# -- ELBO and sticking the landing ----------------------------------------------------------------


def test_elbo_value_and_gradient_are_unbiased():
    values, grads = values_and_gradients(program(pv.elbo), 0)
    check_unbiased(values, elbo_exact(MU0, PHI))
    check_unbiased(grads, jax.grad(elbo_exact, argnums=(0, 1))(MU0, PHI))


def test_stl_gradient_is_unbiased_for_the_elbo():
    values, grads = values_and_gradients(program(pv.elbo_stl), 1)
    check_unbiased(values, elbo_exact(MU0, PHI))
    check_unbiased(grads, jax.grad(elbo_exact, argnums=(0, 1))(MU0, PHI))


def test_stl_has_zero_variance_at_the_exact_posterior_where_reparam_does_not():
    posterior = {"m": jnp.array((MU0 + X) / 2), "log_s": jnp.array(0.5 * math.log(0.5))}
    _, (_, stl) = values_and_gradients(program(pv.elbo_stl), 2, 2000, phi=posterior)
    _, (_, plain) = values_and_gradients(program(pv.elbo), 2, 2000, phi=posterior)
    for name in ("m", "log_s"):
        assert np.max(np.abs(stl[name])) < 1e-5, name  # every draw: the gradient is zero
        assert plain[name].std() > 0.3, name  # the score term the ELBO's gradient keeps


# -- IWAE, DReG, Renyi ----------------------------------------------------------------------------


@pytest.mark.parametrize("objective", [pv.iwae, pv.iwae_dreg], ids=lambda f: f.__name__)
def test_two_particle_iwae_value_and_gradient_are_unbiased(objective):
    values, grads = values_and_gradients(program(objective, 2), 3)
    check_unbiased(values, two_particle_bound(MU0, PHI))
    check_unbiased(grads, jax.grad(two_particle_bound, argnums=(0, 1))(MU0, PHI))


@pytest.mark.parametrize("alpha", [0.5, -0.5])
def test_two_particle_renyi_value_and_gradient_are_unbiased(alpha):
    values, grads = values_and_gradients(program(pv.renyi, 2, alpha), 4)
    check_unbiased(values, two_particle_bound(MU0, PHI, alpha))
    check_unbiased(grads, jax.grad(two_particle_bound, argnums=(0, 1))(MU0, PHI, alpha))


@pytest.mark.parametrize("num", [2, 10])
def test_dreg_has_lower_variance_than_iwae_for_the_guide_and_the_same_for_the_model(num):
    """Measured variance ratios (IWAE / DReG) of the guide's gradient: 23 at K = 2 and 956 at
    K = 10. The model's gradient is IWAE's in both, draw for draw."""
    _, (d_mu_iwae, iwae) = values_and_gradients(program(pv.iwae, num), 5, 4000)
    _, (d_mu_dreg, dreg) = values_and_gradients(program(pv.iwae_dreg, num), 5, 4000)
    np.testing.assert_allclose(d_mu_dreg, d_mu_iwae, rtol=1e-4, atol=1e-5)
    ratio = sum(iwae[n].var() for n in iwae) / sum(dreg[n].var() for n in dreg)
    print(f"K={num}: var(IWAE) / var(DReG) for the guide = {ratio:.1f}")
    assert ratio > 5.0


# -- hierarchical families: HVI, IWHVI, DIWHVI through pv.marginal --------------------------------

REVERSE = {"c": jnp.array(0.5), "d": jnp.array(0.1), "log_r": jnp.array(-0.5)}
LEVELS = {"m": jnp.array(0.4), "log_su": jnp.array(-0.2), "log_sz": jnp.array(-0.7)}


@pv.gen
def two_level(phi, psi):
    u = pv.sample("u", dist.Normal(phi["m"], jnp.exp(phi["log_su"])))
    pv.sample("z", dist.Normal(u, jnp.exp(phi["log_sz"])))


@pv.gen
def reverse(kept, phi, psi):
    pv.sample("u", dist.Normal(psi["c"] * kept["z"] + psi["d"], jnp.exp(psi["log_r"])))


def hierarchical(num_aux, num=None, seed=0, draws_=20_000):
    family = pv.marginal(two_level, keep=["z"], proposal=reverse, num_particles=num_aux)
    objective = pv.elbo if num is None else pv.iwae
    extra = () if num is None else (num,)
    prog = pv.expectation(
        lambda mu0, params: objective(
            model, family, {"x": X}, *extra, model_args=(mu0,), guide_args=params
        )
    )
    params = (LEVELS, REVERSE)
    return draws(lambda k: prog.value_and_grad(k, MU0, params, argnums=(0, 1)), seed, draws_)


def hvi_exact(mu0, params):
    """E over u ~ q(u), z ~ q(z | u) of log p(x, z) + log r(u | z) - log q(u) - log q(z | u)."""
    phi, psi = params
    m, su, sz = phi["m"], jnp.exp(phi["log_su"]), jnp.exp(phi["log_sz"])
    c, d, r = psi["c"], psi["d"], jnp.exp(psi["log_r"])
    v = su**2 + sz**2
    log_p = -LOG_2PI - 0.5 * ((m - mu0) ** 2 + v) - 0.5 * ((X - m) ** 2 + v)
    residual = ((1 - c) * m - d) ** 2 + (1 - c) ** 2 * su**2 + c**2 * sz**2  # E (u - cz - d)^2
    log_r = -0.5 * LOG_2PI - jnp.log(r) - residual / (2 * r**2)
    entropy = LOG_2PI + 1 + jnp.log(su) + jnp.log(sz)
    return log_p + log_r + entropy


def iwhvi_exact(mu0, params, n=24):
    """IWHVI with two auxiliary particles (u1 from the family, u2 from r), by quadrature."""
    phi, psi = params
    nodes, weights = hermite(3, n)
    su, sz, r = jnp.exp(phi["log_su"]), jnp.exp(phi["log_sz"]), jnp.exp(psi["log_r"])
    u1 = phi["m"] + su * nodes[:, 0]
    z = u1 + sz * nodes[:, 1]
    u2 = psi["c"] * z + psi["d"] + r * nodes[:, 2]

    def aux_weight(u):
        joint = dist.Normal(phi["m"], su).log_prob(u) + dist.Normal(u, sz).log_prob(z)
        return joint - dist.Normal(psi["c"] * z + psi["d"], r).log_prob(u)

    log_q = jnp.logaddexp(aux_weight(u1), aux_weight(u2)) - math.log(2)
    log_p = dist.Normal(mu0, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(X)
    return jnp.sum(weights * (log_p - log_q))


def marginal_elbo_exact(mu0, params):
    """The ELBO of the exact marginal N(m, su^2 + sz^2): what IWHVI approaches as M grows."""
    phi, _ = params
    s = jnp.sqrt(jnp.exp(2 * phi["log_su"]) + jnp.exp(2 * phi["log_sz"]))
    return elbo_exact(mu0, {"m": phi["m"], "log_s": jnp.log(s)})


def test_the_hierarchical_bounds_are_ordered():
    params = (LEVELS, REVERSE)
    hvi, iwhvi = hvi_exact(MU0, params), iwhvi_exact(MU0, params)
    assert hvi < iwhvi < marginal_elbo_exact(MU0, params) < log_evidence(MU0)


def test_hvi_is_the_elbo_of_a_marginal_family_unbiased_in_value_and_gradient():
    values, grads = hierarchical(num_aux=1, seed=6)
    params = (LEVELS, REVERSE)
    check_unbiased(values, hvi_exact(MU0, params))
    check_unbiased(grads, jax.grad(hvi_exact, argnums=(0, 1))(MU0, params))


def test_iwhvi_is_the_elbo_of_a_marginal_family_with_two_auxiliary_particles():
    values, grads = hierarchical(num_aux=2, seed=7)
    params = (LEVELS, REVERSE)
    check_unbiased(values, iwhvi_exact(MU0, params))
    check_unbiased(grads, jax.grad(iwhvi_exact, argnums=(0, 1))(MU0, params))


def test_diwhvi_the_iwae_of_a_marginal_family_lies_between_iwhvi_and_the_evidence():
    values, _ = hierarchical(num_aux=2, num=4, seed=8, draws_=10_000)
    sem = values.std(ddof=1) / math.sqrt(len(values))
    iwhvi = float(iwhvi_exact(MU0, (LEVELS, REVERSE)))
    assert (values.mean() - iwhvi) / sem > 4.0
    assert (float(log_evidence(MU0)) - values.mean()) / sem > 4.0
