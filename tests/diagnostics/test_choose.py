"""`pv.choose_strategies` on the examples' discrete mixture and on AIR at a tiny size: the pick is
the pilot table's lowest variance × time, and on the mixture it is enumeration, whose gradient is
then exact."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import progvi as pv

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_example",
                                                  ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_on_the_discrete_mixture_it_picks_enumeration_and_the_gradient_is_exact():
    discrete = _load("discrete")
    data = discrete.load_digits(seed=0).train
    params = discrete.init_params(jax.random.key(0), data, components=4)
    x = jnp.asarray(data[0])
    objective = discrete.elbo_program(pv.reinforce)
    program, report = pv.choose_strategies(
        jax.random.key(1), objective, (params, x), {"c": [pv.reinforce, pv.mvd, pv.enum]},
        num_estimates=64, return_report=True)
    table = report.tables["c"]
    assert table.names == ["reinforce", "mvd", "enum"]
    assert report.strategies == {"c": pv.enum} and table.best == "enum"
    assert table["enum"].total_variance == 0.0 < table["mvd"].total_variance
    assert table["mvd"].total_variance < table["reinforce"].total_variance
    assert report.seconds > 0
    # The chosen program differentiates the exact ELBO of this image.
    got = program.grad(jax.random.key(2), params, x)
    exact = jax.grad(lambda p: discrete.exact_bounds(p, x[None])[0])(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(exact), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def air():
    return _load("air")


def test_on_a_tiny_air_it_picks_the_lower_work_variance(air):
    cfg = air.Config(side=12, steps=1, pres_prior=0.3)  # one object at most: the smallest
    params = air.init_params(jax.random.key(0), cfg)
    digits = air.air_data.digit_images("digits")
    scenes = air.air_data.make_scenes(digits, 4, side=cfg.side, max_objects=1, seed=1)
    image = jnp.asarray(scenes.images[int(np.argmax(scenes.counts))])  # one with objects
    objective = air.objective("reinforce", cfg)
    program, report = pv.choose_strategies(
        jax.random.key(2), objective, (params, image),
        {"*pres_*": {"REINFORCE": pv.reinforce, "MVD": pv.mvd}},
        num_estimates=32, return_report=True)
    table = report.tables["*pres_*"]
    assert table.focus == "*pres_*"
    rows = {row.name: row for row in table.rows}
    best = min(rows.values(), key=lambda row: row.focus_variance * row.seconds)
    assert report.strategies == {"*pres_*": {"REINFORCE": pv.reinforce, "MVD": pv.mvd}[best.name]}
    # The variance the presence draw causes, the other sites held: MVD's (paired runs of the
    # rest of the program) is below REINFORCE's without a baseline, and part of the total.
    assert rows["MVD"].focus_variance < rows["REINFORCE"].focus_variance
    for row in rows.values():
        assert 0 < row.focus_variance < 1.5 * row.total_variance
    grads = program.grad(jax.random.key(3), params, image)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
