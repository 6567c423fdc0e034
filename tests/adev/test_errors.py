"""Bad input fails at trace time with a message naming the address, the distribution and the fix."""

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest

import progvi as pv

KEY = jax.random.key(0)


def test_reparam_on_a_discrete_distribution():
    @pv.expectation
    def program(p):
        return pv.sample("coin", dist.Bernoulli(probs=p), strategy=pv.reparam) * 1.0

    with pytest.raises(pv.StrategyError, match=r"'coin'.*reparam.*Bernoulli.*pv\.reinforce"):
        program.grad(KEY, 0.3)


def test_enumeration_on_a_continuous_distribution():
    @pv.expectation
    def program(m):
        return pv.sample("x", dist.Normal(m, 1.0), strategy=pv.enum)

    with pytest.raises(pv.StrategyError, match=r"'x'.*enum.*Normal.*not finite"):
        program.estimate(KEY, 0.3)


def test_strategy_override_that_does_not_apply():
    @pv.expectation
    def program(m):
        return pv.sample("x", dist.Poisson(m)) * 1.0

    with pytest.raises(pv.StrategyError, match=r"'x'.*enum.*Poisson.*not finite"):
        pv.with_strategies(program, {"x": pv.enum}).estimate(KEY, 2.0)


def test_sample_outside_a_program():
    with pytest.raises(pv.SampleOutsideProgramError, match=r"'z'.*@pv\.expectation"):
        pv.sample("z", dist.Normal(0.0, 1.0))


def test_calling_an_expectation_directly():
    @pv.expectation
    def program(m):
        return pv.sample("x", dist.Normal(m, 1.0))

    with pytest.raises(pv.SampleOutsideProgramError, match=r"program\.estimate\(key"):
        program(0.0)


def test_non_scalar_expectation_under_grad():
    @pv.expectation
    def program(m):
        return pv.sample("x", dist.Normal(m, 1.0)) * jnp.ones(3)

    assert program.estimate(KEY, 0.0).shape == (3,)
    with pytest.raises(pv.ProgramError, match=r"shape \(3,\).*scalar"):
        program.grad(KEY, 0.0)


def test_duplicate_address():
    @pv.expectation
    def program(m):
        return pv.sample("z", dist.Normal(m, 1.0)) + pv.sample("z", dist.Normal(m, 1.0))

    with pytest.raises(pv.AddressError, match=r"'z'.*twice"):
        program.estimate(KEY, 0.0)


def test_duplicate_address_inside_a_scan_body_and_outside():
    @pv.expectation
    def program(m):
        z = pv.sample("z", dist.Normal(m, 1.0))
        step = lambda c, _: (c + pv.sample("z", dist.Normal(m, 1.0)), None)
        return jax.lax.scan(step, z, None, length=2)[0]

    with pytest.raises(pv.AddressError, match=r"'z'"):
        program.estimate(KEY, 0.0)


def test_same_address_in_two_branches_is_allowed():
    @pv.expectation
    def program(m):
        return jax.lax.cond(
            m > 0,
            lambda: pv.sample("z", dist.Normal(m, 1.0)),
            lambda: pv.sample("z", dist.Normal(-m, 2.0)),
        )

    assert jnp.isfinite(program.grad(KEY, 0.5))


def test_strategy_that_is_not_a_strategy():
    @pv.expectation
    def program(m):
        return pv.sample("z", dist.Normal(m, 1.0), strategy="reparam")

    with pytest.raises(pv.StrategyError, match=r"'z'.*not a gradient strategy.*pv\.reparam"):
        program.estimate(KEY, 0.0)
    with pytest.raises(pv.StrategyError, match=r"'z\*'.*not a gradient strategy"):
        pv.with_strategies(program, {"z*": len})


def test_address_must_be_a_string():
    @pv.expectation
    def program(m):
        return pv.sample(3, dist.Normal(m, 1.0))

    with pytest.raises(pv.AddressError, match=r"string address, got 3"):
        program.estimate(KEY, 0.0)


def test_program_returning_a_tuple():
    @pv.expectation
    def program(m):
        x = pv.sample("x", dist.Normal(m, 1.0))
        return x, x

    with pytest.raises(pv.ProgramError, match=r"must return one array"):
        program.estimate(KEY, 0.0)


def test_leave_one_out_needs_two_samples():
    @pv.expectation
    def program(m):
        return pv.sample("x", dist.Normal(m, 1.0), strategy=pv.leave_one_out(num_samples=1))

    with pytest.raises(pv.StrategyError, match=r"'x'.*num_samples >= 2"):
        program.estimate(KEY, 0.0)


def test_mvd_on_an_unsupported_distribution():
    @pv.expectation
    def program(a):
        return pv.sample("g", dist.Gamma(a, 1.0), strategy=pv.mvd)

    with pytest.raises(pv.StrategyError, match=r"'g'.*mvd.*Gamma.*pv\.reparam"):
        program.estimate(KEY, 2.0)
