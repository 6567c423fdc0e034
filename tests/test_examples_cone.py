"""The cone example runs end to end at a small size, and its numbers behave like bounds."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cone_smoke(tmp_path):
    cone = load_example("cone")
    out = cone.main(["--smoke", "--no-progress", "--out", str(tmp_path)])
    assert set(out["rows"]) == {"ELBO", "IWAE(5)", "HVI", "IWHVI(5)", "DIWHVI(5,5)",
                                "RealNVP"}
    for name, row in out["rows"].items():
        (before, _), (after, after_se) = row["before"], row["after"]
        assert after > before, name  # training improved every objective
        assert after < out["evidence"] + 4 * after_se, name  # each is a lower bound of log p(z)
    assert out["png"].exists() and out["png"].stat().st_size > 10_000
    # log p(z = 5) by quadrature in polar coordinates agrees with a Cartesian grid.
    import numpy as np
    from scipy.stats import norm

    g = np.linspace(-3.0, 3.0, 3001)
    x, y = np.meshgrid(g, g)
    r2 = x**2 + y**2
    dens = norm.pdf(x, 0, 10) * norm.pdf(y, 0, 10) * norm.pdf(5.0, r2, 0.1 + np.sqrt(r2) / 100)
    assert abs(np.log(dens.sum() * (g[1] - g[0]) ** 2) - out["evidence"]) < 1e-3
