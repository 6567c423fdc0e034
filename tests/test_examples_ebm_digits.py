"""examples/ebm_digits.py: a smoke run fits, scores, samples and draws; the whitened noise is q."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ebm():
    path = ROOT / "examples" / "ebm_digits.py"
    spec = importlib.util.spec_from_file_location("ebm_digits_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_smoke_run_learns_separates_samples_and_draws(ebm, tmp_path, capsys):
    out = ebm.main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    rows = out["rows"]
    assert list(rows) == ["noise alone", "untrained", "NCE", "plug-in", "compositional"]
    for name, row in rows.items():
        for how in ("IS", "AIS"):
            assert math.isfinite(row[how]["ll"]) and math.isfinite(row[how]["se"]), (name, how)
        assert all(0.0 <= a <= 1.0 for a in row["auroc"].values()), name

    # 200 steps move the compositional model +0.44 nats per image above the untrained network
    # on the held-out images (IS with 10^5 draws, ESS > 80000 for both: the models are still
    # close to q), with a paired s.e. of 0.03 (images and draws); the held-out mean alone has
    # an s.e. of 1.2, common to both. 0.2 nats is more than 7 paired s.e. below the measurement.
    gain, se = out["differences"]["compositional - untrained, IS"]
    assert gain > 0.2 and se < 0.1
    assert rows["compositional"]["IS"]["ll"] > rows["untrained"]["IS"]["ll"] + 0.2
    # Uniform noise images are far outside q already (log q ≈ -4000 against +50 for digits):
    # every row measured AUROC 1.000.
    for name, row in rows.items():
        assert row["auroc"]["uniform"] > 0.99, name

    for name, rate in out["acceptance"].items():
        assert 0.0 < rate <= 1.0, name

    assert [p.name for p in out["pngs"]] == ["ebm_digits_samples.png", "ebm_digits_scores.png"]
    for png in out["pngs"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    for name in ("noise alone", "NCE", "plug-in", "compositional", "AUROC", "nats per image",
                 "acceptance rate"):
        assert name in printed, name


def test_the_whitened_noise_is_the_fitted_multivariate_normal(ebm):
    levels = np.random.default_rng(0).integers(0, 17, size=(200, 64)).astype(np.float32)
    noise = ebm.fit_noise(jax.random.key(0), levels)
    x = ebm.dequantize(jax.random.key(1), jnp.asarray(levels[:20]))
    expected = noise.distribution().log_prob(x)
    np.testing.assert_allclose(ebm.score(noise, None, x), expected, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(noise.to_x(noise.to_z(x)), x, atol=1e-4)
