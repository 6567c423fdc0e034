"""The cone example runs end to end at a small size, and its numbers behave like bounds."""

import importlib.util
import math
import pathlib

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cone_smoke(tmp_path):
    cone = load_example("cone")
    # Three rows: a Gaussian guide, the deepest family (DIWHVI: IWAE of a marginal family) and
    # the flow; tests/inference checks each objective, test_gaussian_fits_... the fitted values.
    out = cone.main(["--smoke", "--no-progress", "--out", str(tmp_path),
                     "--objectives", "IWAE(5)", "DIWHVI(5,5)", "RealNVP"])
    assert set(out["rows"]) == {"IWAE(5)", "DIWHVI(5,5)", "RealNVP"}
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
    dens = norm.pdf(x, 0, 10) * norm.pdf(y, 0, 10) * norm.pdf(5.0, r2, 0.1 + r2 / 100)
    assert abs(np.log(dens.sum() * (g[1] - g[0]) ** 2) - out["evidence"]) < 1e-3


def gaussian_elbo_optimum() -> float:
    """The best ELBO of the cone's diagonal Gaussian guides, by quadrature and Nelder-Mead.

    The ELBO of N(m1, s1) x N(m2, s2) is a Gauss-Hermite sum over a 200 x 200 grid plus the
    guide's entropy; the optimizer starts on an axis and on the diagonal.
    """
    from scipy.optimize import minimize
    from scipy.stats import norm

    t, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()

    def elbo(theta):
        m1, m2, l1, l2 = theta
        x, y = m1 + math.exp(l1) * t[:, None], m2 + math.exp(l2) * t[None, :]
        r2 = x**2 + y**2
        log_p = norm.logpdf(x, 0, 10) + norm.logpdf(y, 0, 10) + norm.logpdf(5.0, r2, 0.1 + r2 / 100)
        entropy = l1 + l2 + math.log(2 * math.pi * math.e)
        return float(np.sum(w[:, None] * w[None, :] * log_p) + entropy)

    starts = [(2.2, 0.0, -3.0, -1.0), (1.6, 1.6, -2.5, -2.5)]
    fits = [minimize(lambda th: -elbo(th), x0, method="Nelder-Mead",
                     options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 20_000}) for x0 in starts]
    return max(-f.fun for f in fits)


def test_gaussian_fits_reach_the_family_optimum():
    """The Gaussian rows, fitted as the example fits them, end where they must.

    For every guide IWAE(5) >= ELBO, so the fitted ELBO is at most the family's best ELBO (by
    quadrature), and the fitted IWAE(5) is at least that best ELBO. A fit stuck away from the
    optimum (with one estimate per step the mean drifted along the ring to a diagonal, and the
    fitted IWAE(5) came out below the fitted ELBO) fails here.
    """
    cone = load_example("cone")
    best = gaussian_elbo_optimum()
    assert best < cone.log_evidence()
    objectives = cone.objectives()
    key = jax.random.key(0)
    fitted = {name: cone.fit(name, objectives[name][0], objectives[name][1],
                             jax.random.fold_in(key, i))
              for i, name in enumerate(["ELBO", "IWAE(5)"])}
    value = {(guide, name): cone.estimate(objectives[name][0], params, jax.random.key(1), 4000)
             for guide, params in fitted.items() for name in fitted}
    for guide in fitted:  # the bound for a fixed guide
        (e, e_se), (w, w_se) = value[guide, "ELBO"], value[guide, "IWAE(5)"]
        assert w > e - 4 * math.hypot(e_se, w_se), (guide, e, w)
    e, e_se = value["ELBO", "ELBO"]
    assert best - 0.1 - 4 * e_se < e < best + 4 * e_se, (e, best)
    w, w_se = value["IWAE(5)", "IWAE(5)"]
    assert w > best - 4 * w_se, (w, best)
