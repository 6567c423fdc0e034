"""A catalogue of bad inputs: each fails with a message that names the site or argument and the fix.

`CASES` holds one bad call each, the error it must raise and a regex that the message must match;
each regex names both where the mistake is (the address, the argument) and what to do instead.
The tests after the catalogue check the behaviours that replace silent failures: strategy
patterns that must match, run-time parameter checks (`pv.validation`), sample sites under
`jax.disable_jit` and inside `jax.checkpoint`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv
from progvi.adev.validation import validating

KEY = jax.random.key(0)


# -- programs and generative functions shared by the cases ------------------------------------


@pv.expectation
def draw(m):
    return pv.sample("x", dist.Normal(m, 1.0))


@pv.expectation
def draw_scale(s):
    return pv.sample("x", dist.Normal(0.0, s))


@pv.expectation
def coin(p):
    return pv.sample("b", dist.Bernoulli(probs=p)) * 1.0


@pv.expectation
def pick(p):
    return pv.sample("c", dist.Categorical(probs=p), strategy=pv.enum) * 1.0


@pv.gen
def model():
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def noisy(s):
    z = pv.sample("z", dist.Normal(0.0, 1.0))
    pv.sample("x", dist.Normal(z, s))


@pv.gen
def guide(m):
    pv.sample("z", dist.Normal(m, 1.0))


@pv.gen
def guide_with_w(m):
    pv.sample("z", dist.Normal(m, 1.0))
    pv.sample("w", dist.Normal(m, 1.0))


@pv.gen
def coin_model():
    z = pv.sample("z", dist.Bernoulli(probs=0.5))
    pv.sample("x", dist.Normal(z, 1.0))


@pv.gen
def coin_guide(p):
    pv.sample("z", dist.Bernoulli(probs=p))


@pv.gen
def joint(m):
    u = pv.sample("u", dist.Normal(m, 1.0))
    pv.sample("z", dist.Normal(u, 1.0))


@pv.gen
def wrong_reverse(kept, m):
    pv.sample("w", dist.Normal(kept["z"], 1.0))


@pv.gen
def in_cond(m):
    return jax.lax.cond(m > 0, lambda: pv.sample("x", dist.Normal(m, 1.0)), lambda: 0.0)


@pv.gen
def in_scan(m):
    step = lambda c, _: (c + pv.sample("x", dist.Normal(m, 1.0)), None)  # noqa: E731
    return jax.lax.scan(step, 0.0, None, length=3)[0]


@pv.gen
def in_vmap(m):
    return jax.vmap(lambda a: pv.sample("x", dist.Normal(a, 1.0)))(m + jnp.arange(3.0))


@pv.gen
def encoder(x):
    return pv.sample("z", dist.Normal(x, 1.0))


@pv.expectation
def encoded(x):
    return pv.sample("enc", encoder(x))


@pv.expectation
def log_weight(m):
    return pv.sample("y", dist.Normal(m, 1.0))


@dataclasses.dataclass(frozen=True)
class NoRule(pv.Strategy):
    name = "no_rule"


class NotADataclass(pv.Strategy):
    name = "not_a_dataclass"

    def local(self, key, d, tangent):
        return pv.Local(d.sample(key), None)


@dataclasses.dataclass(frozen=True)
class ReturnsTuple(pv.Strategy):
    name = "returns_tuple"

    def local(self, key, d, tangent):
        return d.sample(key), None


@dataclasses.dataclass(frozen=True)
class ReturnsValue(pv.Strategy):
    name = "returns_value"

    def jvp(self, key, d, tangent, kont):
        return kont.dual(d.sample(key))[0]


def estimate(body, *args):
    return pv.expectation(body).estimate(KEY, *args)


def with_strategy(strategy):
    return pv.expectation(lambda m: pv.sample("x", dist.Normal(m, 1.0), strategy=strategy))


def inner_typo():
    inner = pv.with_strategies(draw, {"xx": pv.reinforce})
    return pv.expectation(lambda m: inner(m) + 1.0).estimate(KEY, 0.5)


def fit(**changes):
    @pv.expectation
    def local(phi, x):
        return pv.sample("z", dist.Normal(phi["m"], 1.0)) * x

    arguments = dict(key=KEY, objective=local, params={"m": 0.0}, optimizer=optax.sgd(0.1),
                     direction="maximize", num_steps=2, data=jnp.ones(8), batch_size=2,
                     per_datapoint=True)
    arguments.update(changes)
    return pv.fit(**arguments)


def make_step_init(params):
    train = pv.make_step(draw, optax.sgd(0.1), direction="minimize")
    return train.init(params)


# -- the catalogue: (id, bad call, error type, regex naming where and the fix) -----------------

CASES = [
    # 1. strategy patterns that match nothing
    ("with_strategies_typo", lambda: pv.with_strategies(draw, {"y": pv.reinforce}).estimate(
        KEY, 0.5), pv.AddressError,
     r"'draw'.*\['y'\] match no sample site.*addresses are \['x'\].*Correct the spelling"),
    ("with_strategies_glob_typo", lambda: pv.with_strategies(draw, {"enc/*": pv.reinforce})
     .estimate(KEY, 0.5), pv.AddressError, r"\['enc/\*'\] match no sample site.*\['x'\]"),
    ("with_strategies_on_a_call_not_its_choices",
     lambda: pv.with_strategies(encoded, {"enc": pv.reinforce}).estimate(KEY, 0.5),
     pv.AddressError, r"\['enc'\] match no sample site.*\['enc/z'\].*'enc/\*'"),
    ("with_strategies_typo_in_a_nested_program", inner_typo, pv.AddressError,
     r"'draw'.*\['xx'\] match no sample site.*\['x'\].*remove the pattern"),
    ("with_strategies_not_a_dict", lambda: pv.with_strategies(draw, [("x", pv.reinforce)]),
     TypeError, r"strategies is a list.*dict from address patterns.*\{\"enc/\*\": pv\.reinforce"),
    ("with_strategies_pattern_not_a_string", lambda: pv.with_strategies(draw, {3: pv.reinforce}),
     pv.AddressError, r"pattern 3 is not a string.*\{\"enc/\*\""),
    ("with_strategies_strategy_class", lambda: pv.with_strategies(draw, {"x": pv.Reinforce}),
     pv.StrategyError, r"strategy for 'x' is <class.*Use pv\.reparam, pv\.reinforce"),
    # 2. parameters out of support (the suite runs inside pv.validation())
    ("normal_scale_not_positive", lambda: draw_scale.estimate(KEY, -1.0), pv.ValidationError,
     r"sample site 'x': Normal got scale=-1\.0.*jnp\.exp\(raw\) or jax\.nn\.softplus"),
    ("normal_scale_not_positive_under_grad", lambda: draw_scale.grad(KEY, 0.0),
     pv.ValidationError, r"sample site 'x': Normal got scale=0\.0.*softplus"),
    ("bernoulli_probs_above_one", lambda: coin.estimate(KEY, 1.5), pv.ValidationError,
     r"sample site 'b': BernoulliProbs got probs=1\.5.*sigmoid.*logits="),
    ("categorical_probs_off_the_simplex", lambda: pick.grad(KEY, jnp.array([0.5, 0.7])),
     pv.ValidationError, r"sample site 'c': CategoricalProbs got probs=\[0\.5 0\.7\].*softmax"),
    ("model_scale_not_positive_in_an_elbo",
     lambda: pv.expectation(lambda s: pv.elbo(noisy, guide, {"x": 1.0}, model_args=(s,),
                                              guide_args=(0.0,))).grad(KEY, -2.0),
     pv.ValidationError, r"noisy: sample site 'x': Normal got scale=-2\.0.*softplus"),
    ("one_bad_entry_of_a_batched_scale",
     lambda: estimate(lambda s: jnp.sum(pv.sample("v", dist.Normal(jnp.zeros(3), s))),
                      jnp.array([1.0, 0.0, 2.0])),
     pv.ValidationError, r"sample site 'v': Normal got scale=0\.0 \(at index \(1,\)\).*exp"),
    # 3. sample sites inside JAX control flow in a @pv.gen body
    ("gen_sample_inside_lax_cond", lambda: in_cond.simulate(KEY, 1.0), pv.ProgramError,
     r"pv\.sample\('x', \.\.\.\) in in_cond is inside a JAX transformation.*pv\.vmap / pv\.scan"),
    ("gen_sample_inside_lax_scan", lambda: in_scan.assess({"x": 0.0}, 1.0), pv.ProgramError,
     r"'x'.* in in_scan is inside a JAX transformation.*Python loop"),
    ("gen_sample_inside_jax_vmap_in_a_program",
     lambda: estimate(lambda m: pv.simulate(in_vmap, m).score, 1.0), pv.ProgramError,
     r"'x'.* in in_vmap is inside a JAX transformation.*pv\.vmap / pv\.scan combinators"),
    # 6. keys, arguments, argnums
    ("estimate_without_its_key", lambda: draw.estimate(0.5), TypeError,
     r"draw\.estimate\(key, \*args\): the key is the float 0\.5.*left out.*"
     r"draw\.estimate\(jax\.random\.key\(0\), \*args\)"),
    ("estimate_with_an_int_key", lambda: draw.estimate(0, 0.5), TypeError,
     r"draw\.estimate.*the key is the int 0, not a jax\.random key\. Call "
     r"draw\.estimate\(jax\.random\.key\(0\)"),
    ("grad_without_its_key", lambda: draw.grad(0.5), TypeError,
     r"draw\.grad\(key, \*args\): the key is the float 0\.5.*draw\.grad\(jax\.random\.key\(0\)"),
    ("evaluate_with_an_array_key", lambda: draw.evaluate(jnp.zeros(3), None, 0.5), TypeError,
     r"draw\.evaluate.*an array of shape \(3,\).*jax\.random\.key\(0\)"),
    ("estimate_with_too_few_arguments", lambda: draw.estimate(KEY), TypeError,
     r"draw\(m\) was estimated with 0 argument.*'m'.*draw\.estimate\(key, \*args\)"),
    ("nested_program_with_too_many_arguments",
     lambda: estimate(lambda m: draw(m, m), 0.5), TypeError,
     r"draw\(m\) was called with 2 argument.*Call draw\(\*args\)"),
    ("grad_argnums_out_of_range", lambda: draw.grad(KEY, 0.5, argnums=1), TypeError,
     r"draw\.grad: argnums=1.*1 argument\(s\) after the key.*\[-1, 0\].*not the key"),
    ("value_and_grad_argnums_tuple_out_of_range",
     lambda: draw.value_and_grad(KEY, 0.5, argnums=(0, 2)), TypeError,
     r"draw\.value_and_grad: argnums=\(0, 2\).*\[-1, 0\]"),
    ("grad_argnums_not_an_int", lambda: draw.grad(KEY, 0.5, argnums="0"), TypeError,
     r"argnums='0'.*an int or a tuple of ints"),
    ("grad_of_an_int_argument", lambda: draw.grad(KEY, 1), TypeError,
     r"draw\.grad: argument 0 is the int 1 of dtype int32.*1\.0, not 1"),
    ("grad_of_an_int_leaf", lambda: pv.expectation(lambda p: p["w"] * 1.0).grad(KEY, {"w": 2}),
     TypeError, r"argument 0\['w'\].*int32.*floating-point.*out of argnums"),
    ("expectation_of_a_non_function", lambda: pv.expectation(3), TypeError,
     r"@pv\.expectation decorates a function, got the int 3"),
    ("sample_of_a_number", lambda: estimate(lambda m: pv.sample("y", 3.0), 0.5), pv.ProgramError,
     r"pv\.sample\('y', \.\.\.\) got the float 3\.0, not a distribution.*dist\.Normal\(0\.0"),
    ("sample_of_a_distribution_class", lambda: estimate(lambda: pv.sample("y", dist.Normal)),
     pv.ProgramError, r"pv\.sample\('y', Normal\): Normal is a class.*dist\.Normal\(\.\.\.\)"),
    ("gen_simulate_without_its_key", lambda: guide.simulate(0.5), TypeError,
     r"guide\.simulate\(key, \*args\): the key is the float 0\.5.*left out.*"
     r"guide\.simulate\(jax\.random\.key\(0\)"),
    ("gen_run_with_missing_arguments",
     lambda: estimate(lambda m: pv.elbo(model, guide, {"x": 1.0}), 0.5), TypeError,
     r"guide\(m\) was run with 0 argument.*'m'.*guide_args=\(\.\.\.\)"),
    # 6. strategies
    ("strategy_with_neither_rule", lambda: with_strategy(NoRule()).grad(KEY, 0.5),
     pv.StrategyError, r"sample site 'x': NoRule implements neither rule.*local\(self, key, "
     r"dist, tangent\) -> pv\.Local.*jvp\(self, key, dist, tangent, kont\)"),
    ("strategy_that_is_not_a_dataclass", lambda: with_strategy(NotADataclass()).grad(KEY, 0.5),
     pv.StrategyError, r"sample site 'x': the strategy NotADataclass is not a dataclass.*"
     r"@dataclasses\.dataclass\(frozen=True\) class NotADataclass"),
    ("local_rule_returning_a_tuple", lambda: with_strategy(ReturnsTuple()).grad(KEY, 0.5),
     pv.StrategyError, r"ReturnsTuple\.local \(for a Normal\) returned a tuple.*"
     r"return pv\.Local\(value, tangent\)"),
    ("jvp_rule_returning_one_value", lambda: with_strategy(ReturnsValue()).grad(KEY, 0.5),
     pv.StrategyError, r"ReturnsValue\.jvp \(for a Normal\) returned a .*pair \(value, tangent\)"
     r".*kont\.dual"),
    ("enum_on_a_guide_site_under_iwae",
     lambda: pv.with_strategies(pv.expectation(lambda p: pv.iwae(
         coin_model, coin_guide, {"x": 1.0}, 3, guide_args=(p,))), {"z": pv.enum}).grad(KEY, 0.3),
     pv.StrategyError, r"sample site 'z' is drawn once per particle.*K-particle objectives.*"
     r"pv\.iwae.*one batched site.*pv\.enum needs the rest.*pv\.reinforce.*pv\.elbo"),
    ("enum_inside_a_vmap_combinator",
     lambda: pv.with_strategies(pv.expectation(lambda p: pv.simulate(
         pv.vmap(coin_guide), p).score), {"z": pv.enum}).grad(KEY, jnp.full(2, 0.3)),
     pv.StrategyError, r"sample site 'z' is drawn once per datapoint of pv\.vmap\(coin_guide\)"
     r".*pv\.plate"),
    ("strategy_class_instead_of_instance", lambda: with_strategy(pv.Reparam).estimate(KEY, 0.5),
     pv.StrategyError, r"pv\.sample\('x', \.\.\.\): strategy=<class.*Pass one of pv\.reparam"),
    # 6. objectives and families
    ("elbo_obs_at_an_unknown_address",
     lambda: estimate(lambda m: pv.elbo(model, guide, {"y": 1.0}, guide_args=(m,)), 0.5),
     pv.ChoiceError, r"pv\.elbo\(model, guide, obs, \.\.\.\): obs gives a value at 'y', but "
     r"model samples no such address \(it samples \['x', 'z'\]\)\. Correct the spelling"),
    ("iwae_obs_at_an_unknown_address",
     lambda: estimate(lambda m: pv.iwae(model, guide, {"y": 1.0}, 3, guide_args=(m,)), 0.5),
     pv.ChoiceError, r"pv\.iwae\(model, guide.*obs gives a value at 'y'.*Correct the spelling"),
    ("rws_obs_at_an_unknown_address",
     lambda: estimate(lambda m: pv.rws(model, guide, {"y": 1.0}, 3, guide_args=(m,)), 0.5),
     pv.ChoiceError, r"pv\.rws\(model, guide.*obs gives a value at 'y'"),
    ("elbo_obs_that_the_guide_samples",
     lambda: estimate(lambda m: pv.elbo(model, guide, {"x": 1.0, "z": 0.0}, guide_args=(m,)),
                      0.5),
     pv.ChoiceError, r"obs gives a value at 'z', which the guide guide also samples.*remove it"),
    ("elbo_without_the_observation",
     lambda: estimate(lambda m: pv.elbo(model, guide, {}, guide_args=(m,)), 0.5),
     pv.ChoiceError, r"model samples 'x', but neither obs.*nor the guide guide.*Add it to obs"),
    ("elbo_guide_with_an_extra_choice",
     lambda: estimate(lambda m: pv.elbo(model, guide_with_w, {"x": 1.0}, guide_args=(m,)), 0.5),
     pv.ChoiceError, r"the guide guide_with_w samples 'w', but model samples no such.*rename"),
    ("marginal_proposal_of_other_addresses",
     lambda: estimate(lambda m: pv.simulate(pv.marginal(joint, keep=["z"],
                                                        proposal=wrong_reverse), m).score, 0.5),
     pv.ChoiceError, r"pv\.marginal\(joint, keep=\['z'\], proposal=wrong_reverse\): the proposal "
     r"must sample exactly the auxiliary choices.*\['u'\].*samples \['w'\].*Give the proposal"),
    ("marginal_of_a_plain_function", lambda: pv.marginal(lambda m: m, keep=["z"], proposal=guide),
     TypeError, r"pv\.marginal: gen_fn is a function, not a generative function.*@pv\.gen"),
    ("marginal_keep_as_a_string", lambda: pv.marginal(joint, keep="z", proposal=wrong_reverse),
     TypeError, r"keep='z' must be a list of addresses, e\.g\. \[\"z\"\]"),
    ("normalize_observation_at_an_unknown_address",
     lambda: estimate(lambda m: pv.simulate(pv.normalize(model, guide, 3,
                                                         observations={"y": 1.0}), m).score, 0.5),
     pv.ChoiceError, r"pv\.normalize\(model, guide, \.\.\.\): observations gives a value at 'y'.*"
     r"Correct the spelling"),
    ("normalize_observations_as_a_list",
     lambda: pv.normalize(model, guide, 3, observations=[1.0]), TypeError,
     r"observations is a list.*observations=\{\"x\": x\}"),
    ("normalize_target_args_not_a_tuple",
     lambda: pv.normalize(model, guide, 3, target_args=1.0), TypeError,
     r"target_args is a float.*target_args=\(value,\)"),
    ("normalize_of_a_number", lambda: pv.normalize(3, guide, 3), TypeError,
     r"pv\.normalize: target is the int 3, not a generative function.*@pv\.gen"),
    ("plate_without_its_function", lambda: estimate(lambda xs: pv.plate(xs, xs), jnp.ones(3)),
     pv.ProgramError, r"pv\.plate: fn is .*not a function.*pv\.plate\(lambda x: \.\.\., xs\)"),
    ("plate_argument_without_a_datapoint_axis",
     lambda: estimate(lambda x: pv.plate(lambda x: x, x), 1.0), pv.ProgramError,
     r"pv\.plate: argument leaf 0 has shape \(\), which has no axis 0.*in_axes=None"),
    ("particles_without_its_function",
     lambda: estimate(lambda m: pv.particles(m, 3), 0.5), pv.ProgramError,
     r"pv\.particles: fn is .*not a function.*pv\.particles\(lambda: "),
    ("particles_count_true", lambda: estimate(lambda m: jnp.sum(pv.particles(
        lambda: pv.sample("x", dist.Normal(m, 1.0)), True)), 0.5), pv.ProgramError,
     r"num_particles=True.*Python int of at least 1.*pv\.particles\(fn, 5\)"),
    ("log_expectation_with_too_many_arguments",
     lambda: estimate(lambda m: pv.log_expectation(log_weight, m, m,
                                                   estimator=pv.plug_in(num_samples=2)), 0.5),
     TypeError, r"log_weight\(m\) was called with 2 argument.*log_weight\(\*args\)"),
    ("log_expectation_estimator_factory_not_called",
     lambda: estimate(lambda m: pv.log_expectation(log_weight, m, estimator=pv.plug_in), 0.5),
     TypeError, r"estimator=<function plug_in.*estimator=pv\.plug_in\(num_samples=K\)"),
    ("log_expectation_of_a_plain_function",
     lambda: estimate(lambda m: pv.log_expectation(lambda m: m, m,
                                                   estimator=pv.plug_in(num_samples=2)), 0.5),
     pv.ProgramError, r"program=.*is not an expectation program.*@pv\.expectation"),
    # 6. fit and make_step
    ("fit_float_batch_size", lambda: fit(batch_size=2.0), TypeError,
     r"fit: batch_size=2\.0 is a float.*Python int.*batch_size=2\b"),
    ("fit_float_num_steps", lambda: fit(num_steps=10.0), TypeError,
     r"fit: num_steps=10\.0 is a float.*num_steps=10\b"),
    ("fit_int_params", lambda: fit(params={"m": 0}), TypeError,
     r"fit: params\['m'\] has dtype int32.*0\.0, not 0"),
    ("fit_params_that_hold_no_arrays", lambda: fit(params={}), TypeError,
     r"fit: params=\{\} holds no arrays.*\{'m': 0\.0"),
    ("fit_params_with_a_string", lambda: fit(params={"m": 0.0, "name": "a"}), TypeError,
     r"fit: params\['name'\] is a str, not an array.*keep other settings out of params"),
    ("fit_without_its_key", lambda: fit(key=draw), TypeError,
     r"pv\.fit\(key, objective.*not a jax\.random key.*pv\.fit\(jax\.random\.key\(0\), objective"),
    ("fit_extra_args_not_a_tuple", lambda: fit(extra_args=1.0), TypeError,
     r"fit: extra_args is a float.*extra_args=\(value,\)"),
    ("fit_callback_not_callable", lambda: fit(callback=3), TypeError,
     r"fit: callback=3 is not callable.*callback\(step, state, value\)"),
    ("fit_data_of_the_wrong_shape", lambda: fit(data=jnp.ones((8, 3))), pv.ProgramError,
     r"returned shape \(3,\) for one datapoint.*given one datapoint of shape \(3,\).*reshape it"),
    ("make_step_init_with_int_params", lambda: make_step_init(jnp.zeros(2, jnp.int32)),
     TypeError, r"make_step\(\.\.\.\)\.init: params has dtype int32.*x\.astype\(jnp\.float32\)"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_bad_input_is_explained(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_the_catalogue_is_large_and_its_cases_distinct():
    names = [c[0] for c in CASES]
    assert len(names) >= 40
    assert len(set(names)) == len(names)


# -- 1. patterns must match a site somewhere in the traced program -----------------------------


def _reinforced(program, *args, pattern="x"):
    """Whether the override at `pattern` reached the site: REINFORCE's gradient differs."""
    overridden = pv.with_strategies(program, {pattern: pv.reinforce})
    return not np.allclose(overridden.grad(KEY, *args), program.grad(KEY, *args))


def test_a_pattern_that_matches_only_inside_a_cond_branch_counts():
    @pv.expectation
    def branchy(m):
        return jax.lax.cond(m > 0, lambda: pv.sample("x", dist.Normal(m, 1.0)) ** 2,
                            lambda: m)

    assert _reinforced(branchy, 0.5)


def test_a_pattern_that_matches_only_a_nested_program_or_log_expectation_counts():
    outer = pv.expectation(lambda m: draw(m) ** 2)
    assert _reinforced(outer, 0.5)
    log_z = pv.expectation(
        lambda m: pv.log_expectation(log_weight, m, estimator=pv.plug_in(num_samples=2)))
    assert _reinforced(log_z, 0.5, pattern="log_weight/y")


def test_an_inner_programs_override_applies_to_its_own_sites():
    inner = pv.with_strategies(draw, {"x": pv.reinforce})  # the inner program's own address
    outer = pv.expectation(lambda m: inner(m) ** 2)
    plain = pv.expectation(lambda m: draw(m) ** 2)
    assert not np.allclose(outer.grad(KEY, 0.5), plain.grad(KEY, 0.5))


# -- 2. validation: run time, under jit and vmap, keyed compilation ----------------------------


def test_the_suite_runs_inside_validation():
    assert validating()


@pytest.mark.no_validation
def test_the_no_validation_marker_turns_it_off():
    assert not validating()


def test_a_bad_parameter_inside_a_jitted_vmap_reaches_the_user():
    grads = jax.jit(jax.vmap(lambda k, s: draw_scale.grad(k, s)))
    keys = jax.random.split(KEY, 4)
    assert np.all(np.isfinite(grads(keys, jnp.ones(4))))
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError),
                       match=r"sample site 'x': Normal got scale=-2\.0 \(at index \(2,\)\)"):
        grads(keys, jnp.ones(4).at[2].set(-2.0))


def test_validation_keeps_values_and_gradients():
    with pv.validation(False):
        off = draw_scale.value_and_grad(KEY, 0.7)
    on = draw_scale.value_and_grad(KEY, 0.7)
    # Up to rounding: XLA may fuse the operations around a check differently.
    np.testing.assert_allclose(on, off, rtol=1e-6)


def test_the_compiled_functions_are_kept_apart_by_the_setting():
    with pv.validation(False):
        draw_scale.grad(KEY, -1.0)  # no check: a value, computed with the bad scale
    with pytest.raises(pv.ValidationError, match=r"scale=-1\.0"):
        draw_scale.grad(KEY, -1.0)
    with pv.validation(False):
        draw_scale.grad(KEY, -1.0)


def test_fit_compiles_its_steps_again_for_validation():
    @pv.expectation
    def square(s):
        return pv.sample("z", dist.Normal(0.0, s)) ** 2

    def run():
        return pv.fit(KEY, square, jnp.array(-1.0), optax.sgd(1e-3), direction="minimize",
                      num_steps=2, progress=False)

    with pv.validation(False):
        run()  # the bad scale goes unnoticed
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError),
                       match=r"sample site 'z': Normal got scale=-1\.0"):
        run()


def test_a_static_parameter_stays_static():
    @pv.expectation
    def count(p):
        return pv.sample("k", dist.Binomial(3, probs=p), strategy=pv.enum) * 1.0

    assert float(count.estimate(KEY, 0.5)) == pytest.approx(1.5)


# -- 4. lax.scan under jax.disable_jit ----------------------------------------------------------


def test_sites_in_a_scan_under_disable_jit_are_one_site():
    @pv.expectation
    def walk(m):
        step = lambda c, _: (c + pv.sample("x", dist.Normal(m, 1.0)), None)  # noqa: E731
        return jax.lax.scan(step, 0.0, None, length=3)[0] ** 2

    jitted = walk.value_and_grad(KEY, 0.3)
    with jax.disable_jit():
        eager = walk.value_and_grad(KEY, 0.3)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5)


# -- 5. jax.checkpoint around sample sites ------------------------------------------------------


def _body(m):
    x = pv.sample("x", dist.Normal(m, 1.0))
    b = pv.sample("b", dist.Bernoulli(probs=jax.nn.sigmoid(m)), strategy=pv.reinforce)
    return jnp.sin(x) ** 2 + b * x


@pytest.mark.parametrize("policy", [None, jax.checkpoint_policies.nothing_saveable])
def test_a_checkpointed_body_gives_the_values_and_gradients_of_the_body(policy):
    checkpointed = pv.expectation(lambda m: jax.checkpoint(_body, policy=policy)(m))
    # The same sites behind a jit boundary draw with the same keys.
    jitted = pv.expectation(lambda m: jax.jit(_body)(m))
    assert ([float(v) for v in checkpointed.value_and_grad(KEY, 0.3)]
            == [float(v) for v in jitted.value_and_grad(KEY, 0.3)])
    outer = jax.grad(lambda m: checkpointed.estimate(KEY, m))(0.3)
    assert float(outer) == float(jitted.grad(KEY, 0.3))


def test_a_checkpointed_enumeration_is_exact():
    def body(p):
        b = pv.sample("b", dist.Bernoulli(probs=p), strategy=pv.enum)
        return jnp.where(b > 0, jnp.sin(p), p**2)

    plain = pv.expectation(body)
    checkpointed = pv.expectation(lambda p: jax.checkpoint(body)(p))
    np.testing.assert_allclose(checkpointed.value_and_grad(KEY, 0.4),
                               plain.value_and_grad(KEY, 0.4), rtol=1e-6)
