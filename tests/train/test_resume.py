"""Training state you can resume: FitResults, orbax checkpoints, Ctrl-C, metrics, optax extras."""

import importlib.util
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

import progvi as pv

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = pathlib.Path(__file__).with_name("scripts") / "fit_run.py"


@pytest.fixture(scope="module")
def runs():
    spec = importlib.util.spec_from_file_location("fit_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same(a, b):
    """Two FitResults equal bit for bit: params, optimizer and estimator states, history."""
    for x, y in zip(jax.tree.leaves((a.params, a.opt_state, a.estimator_state)),
                    jax.tree.leaves((b.params, b.opt_state, b.estimator_state)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(a.history, b.history)
    assert sorted(a.metrics) == sorted(b.metrics)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
    assert a.step == b.step


def test_two_halves_equal_one_run_bit_for_bit(runs):
    whole = runs.run(None, num_steps=90)
    half = runs.run(None, num_steps=45)
    assert half.step == 45 and half.history.shape == (45,) and half.metrics["z"].shape == (45,)
    rest = pv.fit(jax.random.key(3), runs.elbo, None, runs.ADAM, direction="maximize",
                  num_steps=45, data=runs.DATA, batch_size=16, per_datapoint=True,
                  chunk_size=runs.CHUNK, resume=half, progress=False)
    assert_same(rest, whole)
    # A pickled result resumes the same way.
    again = pv.fit(jax.random.key(3), runs.elbo, None, runs.ADAM, direction="maximize",
                   num_steps=45, data=runs.DATA, batch_size=16, per_datapoint=True,
                   resume=pickle.loads(pickle.dumps(half)), progress=False)
    assert_same(again, whole)


def test_resuming_needs_the_same_key_and_no_other_params(runs):
    half = runs.run(None, num_steps=20)
    with pytest.raises(ValueError, match=r"key differs.*same key as the first fit"):
        pv.fit(jax.random.key(4), runs.elbo, None, runs.ADAM, direction="maximize",
               num_steps=5, data=runs.DATA, batch_size=16, per_datapoint=True, resume=half,
               progress=False)
    with pytest.raises(ValueError, match=r"params must be None \(or result.params\)"):
        pv.fit(jax.random.key(3), runs.elbo, runs.PARAMS, runs.ADAM, direction="maximize",
               num_steps=5, data=runs.DATA, batch_size=16, per_datapoint=True, resume=half,
               progress=False)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in that directory"):
        runs.run(ROOT / "no-such-checkpoints", num_steps=5, resume=ROOT / "no-such-checkpoints")


def test_checkpoints_resume_to_the_uninterrupted_result(runs, tmp_path):
    whole = runs.run(tmp_path / "whole")
    assert pv.train.latest_step(tmp_path / "whole") == runs.NUM_STEPS
    resumed = runs.run(tmp_path / "whole", num_steps=0, resume=tmp_path / "whole")
    assert_same(resumed, whole)


def _start(mode, directory):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    process = subprocess.Popen([sys.executable, str(SCRIPT), mode, str(directory)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (directory / "running").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the fit did not start"
        time.sleep(0.05)
    return process


def test_a_killed_run_resumes_from_its_checkpoint_bit_for_bit(runs, tmp_path):
    process = _start("checkpoint", tmp_path)
    deadline = time.monotonic() + 120
    while (pv.train.latest_step(tmp_path) or 0) < 3 * runs.CHUNK:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.kill()  # SIGKILL: no cleanup of any kind
    process.wait()
    saved = pv.train.latest_step(tmp_path)
    assert 3 * runs.CHUNK <= saved < runs.NUM_STEPS
    resumed = runs.run(tmp_path, num_steps=runs.NUM_STEPS - saved, resume=tmp_path)
    assert_same(resumed, runs.run(None))


def test_ctrl_c_returns_what_was_trained_and_saves_it(runs, tmp_path):
    process = _start("interrupt", tmp_path)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    step = int(out.split("step=")[1])
    assert "interrupted=True" in out and 0 < step < runs.NUM_STEPS and step % runs.CHUNK == 0
    assert pv.train.latest_step(tmp_path) == step  # saved on the way out
    resumed = runs.run(tmp_path, num_steps=runs.NUM_STEPS - step, resume=tmp_path)
    assert_same(resumed, runs.run(None))


def test_metrics_are_recorded_at_every_step_and_returned_by_make_step(runs):
    result = runs.run(None, num_steps=30)
    z = result.metrics["z"]
    assert z.shape == (30,) and np.all(np.isfinite(z)) and np.std(z) > 0
    train = pv.make_step(runs.elbo, runs.ADAM, direction="maximize", per_datapoint=True)
    state = train.init(runs.PARAMS, runs.DATA[:16])
    state, value, metrics = jax.jit(train.step_with_metrics)(state, jax.random.key(0),
                                                             runs.DATA[:16])
    assert set(metrics) == {"z"} and metrics["z"].shape == ()


@pv.expectation
def quadratic(theta):
    z = pv.sample("z", dist.Normal(theta, 0.1))
    return jnp.sum((z - 3.0) ** 2)


@pytest.mark.parametrize("name, optimizer, steps", [
    ("reduce_on_plateau", optax.chain(optax.adam(0.1), optax.contrib.reduce_on_plateau(
        patience=5, factor=0.5)), 300),
    ("polyak_sgd", optax.polyak_sgd(max_learning_rate=0.5), 300),
    ("lbfgs", optax.lbfgs(), 30),
])
def test_optax_transformations_that_need_the_loss_get_it(name, optimizer, steps):
    result = pv.fit(jax.random.key(0), quadratic, jnp.zeros(2), optimizer,
                    direction="minimize", num_steps=steps, progress=False)
    # E[(z - 3)^2] = (theta - 3)^2 + 0.01 per coordinate: minimized at 3.
    np.testing.assert_allclose(result.params, 3.0, atol=0.1)
    train = pv.make_step(quadratic, optimizer, direction="minimize")
    state, value = jax.jit(train.step)(train.init(jnp.zeros(2)), jax.random.key(0))
    assert np.isfinite(float(value))


def test_lookahead_trains_its_fast_and_slow_params():
    optimizer = optax.lookahead(optax.adam(0.1), sync_period=5, slow_step_size=0.5)
    params = optax.LookaheadParams.init_synced(jnp.zeros(2))
    result = pv.fit(jax.random.key(0), quadratic, params, optimizer, direction="minimize",
                    num_steps=300, progress=False)
    np.testing.assert_allclose(result.params.slow, 3.0, atol=0.1)
    np.testing.assert_allclose(result.params.fast, 3.0, atol=0.1)
