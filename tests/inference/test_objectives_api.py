"""The objectives' argument errors (what was wrong, where, and the fix) and `pv.particles`."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import progvi as pv


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def guide(m):
    pv.sample("z", dist.Normal(m, 1.0))


def estimate(body, *args):
    return pv.expectation(body).estimate(jax.random.key(0), *args)


K_OBJECTIVES = [pv.iwae, pv.iwae_dreg, pv.vimco, pv.wake_p, pv.wake_q, pv.rws, pv.forward_kl]


@pytest.mark.parametrize("objective", K_OBJECTIVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("count", [0, -3, 2.5, "4"])
def test_a_particle_count_that_is_not_a_positive_int_is_explained(objective, count):
    name = objective.__name__
    with pytest.raises(pv.ObjectiveError, match=rf"pv\.{name}: num_particles={count!r}, but it "
                       r"must be a Python int of at least \d.*pv\.\w+\(model, guide, obs, \d"):
        estimate(lambda m: objective(model, guide, {"x": 1.0}, count, guide_args=(m,)), 0.0)


def test_vimco_needs_two_particles_for_its_baselines():
    with pytest.raises(pv.ObjectiveError, match=r"pv\.vimco: num_particles=1.*at least 2"):
        estimate(lambda m: pv.vimco(model, guide, {"x": 1.0}, 1, guide_args=(m,)), 0.0)


@pytest.mark.parametrize("alpha", [1, 1.0, float("inf"), "0.5", jnp.array(0.5)])
def test_renyi_rejects_alpha_one_and_non_numbers_and_points_to_the_elbo(alpha):
    with pytest.raises(pv.ObjectiveError, match=r"pv\.renyi: alpha=.*finite Python number "
                       r"other than 1.*divides by 1 - alpha.*use pv\.elbo"):
        estimate(lambda m: pv.renyi(model, guide, {"x": 1.0}, 3, alpha, guide_args=(m,)), 0.0)


def test_renyi_accepts_numpy_scalars():
    value = estimate(lambda m: pv.renyi(model, guide, {"x": 1.0}, 3, np.float32(0.5),
                                        guide_args=(m,)), 0.0)
    assert np.isfinite(value)


def test_observations_must_be_a_choice_map():
    with pytest.raises(pv.ObjectiveError, match=r"pv\.elbo: obs is a float, but it must be a "
                       r"choice map.*\{\"x\": x\}"):
        estimate(lambda m: pv.elbo(model, guide, 1.0, guide_args=(m,)), 0.0)


@pytest.mark.parametrize("keyword", ["model_args", "guide_args"])
def test_argument_lists_must_be_tuples(keyword):
    with pytest.raises(pv.ObjectiveError, match=rf"pv\.iwae: {keyword} is a list, but it must "
                       rf"be the tuple.*Write {keyword}=\(value,\)"):
        estimate(lambda m: pv.iwae(model, guide, {"x": 1.0}, 3, **{keyword: [m]}), 0.0)


def test_forward_kl_proposal_args_must_be_a_tuple():
    with pytest.raises(pv.ObjectiveError, match=r"pv\.forward_kl: proposal_args is a float"):
        estimate(lambda m: pv.forward_kl(model, guide, {"x": 1.0}, 3, guide_args=(m,),
                                         proposal=guide, proposal_args=0.0), 0.0)


def test_a_strategy_that_needs_the_continuation_cannot_draw_particles():
    program = pv.expectation(lambda m: pv.iwae(model, guide, {"x": 1.0}, 3, guide_args=(m,)))
    with pytest.raises(pv.StrategyError, match=r"sample site 'z' is drawn once per particle.*"
                       r"pv\.mvd needs the rest.*pv\.reinforce.*pv\.elbo"):
        pv.with_strategies(program, {"z": pv.mvd}).estimate(jax.random.key(0), 0.0)


# -- pv.particles ---------------------------------------------------------------------------------


def test_particles_draw_independently_even_from_a_distribution_that_ignores_the_arguments():
    @pv.gen
    def noisy(m):
        e = pv.sample("e", dist.Normal(0.0, 1.0))
        pv.sample("z", dist.Normal(m + e, 1.0))

    @pv.expectation
    def draws(m):
        tr = pv.particles(pv.simulate, 5, noisy, m)
        return jnp.stack([tr.choices["e"], tr.choices["z"], tr.score])

    out = draws.estimate(jax.random.key(1), 0.3)
    assert out.shape == (3, 5)
    assert len(np.unique(np.asarray(out[0]))) == 5 and len(np.unique(np.asarray(out[1]))) == 5
    expected = dist.Normal(0.0, 1.0).log_prob(out[0]) + dist.Normal(0.3 + out[0], 1.0).log_prob(
        out[1])
    np.testing.assert_allclose(out[2], expected, rtol=1e-5)


def test_particles_keep_the_addresses_so_strategy_overrides_apply():
    program = pv.expectation(lambda m: pv.iwae(model, guide, {"x": 1.0}, 3, guide_args=(m,)))
    sites = [e.params["address"] for e in program.trace(0.0).jaxpr.eqns
             if e.primitive.name == "progvi_sample"]
    assert sites == ["z"]
    scored = pv.with_strategies(program, {"z": pv.reinforce})
    keys = jax.random.split(jax.random.key(2), 2000)
    path = jax.vmap(lambda k: program.grad(k, 0.0))(keys)
    score = jax.vmap(lambda k: scored.grad(k, 0.0))(keys)
    assert score.std() > 2 * path.std()  # REINFORCE is in force at "z"


def test_particles_rejects_a_bad_count():
    with pytest.raises(pv.ProgramError,
                       match=r"pv\.particles: num_particles=0.*pv\.particles\(fn, 5\)"):
        estimate(lambda: pv.particles(lambda: pv.sample("x", dist.Normal(0.0, 1.0)), 0))
