"""examples/eight_schools.py: a smoke run fits the AutoNormal guide, draws posterior and
posterior-predictive samples and summarizes them with ArviZ."""

import importlib.util
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_smoke_run_fits_and_summarizes(capsys):
    spec = importlib.util.spec_from_file_location("eight_schools_example",
                                                  ROOT / "examples" / "eight_schools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--smoke", "--no-progress"])
    history = out["result"].history
    assert history[-50:].mean() > history[:50].mean() + 5.0  # the fit moved the ELBO up
    samples = out["samples"]
    assert samples["theta"].shape == (400, 8)
    np.testing.assert_allclose(samples["theta"],
                               samples["mu"][:, None] + samples["tau"][:, None] * samples["eta"],
                               rtol=1e-4, atol=1e-4)
    assert out["predictive"]["obs"].shape == (400, 8)
    assert np.all(samples["tau"] > 0)
    summary = out["summary"]
    assert len(summary) == 10 and "mean" in summary.columns  # mu, tau and 8 thetas
    printed = capsys.readouterr().out
    assert "ELBO over the last 100 steps" in printed and "mean" in printed
