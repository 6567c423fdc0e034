"""examples/air.py and examples/air_data.py: the scenes, the spatial transformer against a direct
bilinear computation, the count accuracy, the masked densities, every estimator's gradient, the
agreement of the presence estimators' gradient means, and a smoke run of the script."""

import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import progvi as pv

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_example",
                                                  ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def air():
    return _load("air")


@pytest.fixture(scope="module")
def tiny(air):
    """A 12x12 canvas with at most two objects: the smallest program with every feature."""
    cfg = air.Config(side=12, steps=2, pres_prior=0.3)
    return cfg, air.init_params(jax.random.key(0), cfg)


@pytest.fixture(scope="module")
def single(air):
    """At most one object: the gradient tests' size (each compiles an estimator)."""
    cfg = air.Config(side=12, steps=1, pres_prior=0.3)
    return cfg, air.init_params(jax.random.key(0), cfg)


def test_scenes_are_reproducible_and_hold_their_counts(air):
    data = air.air_data
    digits = data.digit_images("digits")
    a = data.make_scenes(digits, 60, side=30, max_objects=3, seed=4)
    b = data.make_scenes(digits, 60, side=30, max_objects=3, seed=4)
    c = data.make_scenes(digits, 60, side=30, max_objects=3, seed=5)
    assert a.images.shape == (60, 30, 30) and a.images.dtype == np.float32
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.images, c.images)
    assert set(a.counts.tolist()) == {0, 1, 2, 3}
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    ink = a.images.reshape(60, -1).sum(1)
    assert np.all(ink[a.counts == 0] == 0) and np.all(ink[a.counts > 0] > 5)
    # More digits, more ink (overlaps keep the brighter pixel, so less than proportionally).
    means = [ink[a.counts == n].mean() for n in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


def test_digits_cover_at_most_a_quarter_of_each_other(air):
    data = air.air_data
    assert data._overlap((0, 0, 10), (5, 5, 10)) == 0.25
    assert data._overlap((0, 0, 4), (0, 0, 10)) == 1.0  # the small square lies inside
    assert data._overlap((0, 0, 10), (10, 0, 10)) == 0.0
    digits = data.digit_images("digits")
    loose = data.make_scenes(digits, 400, side=30, max_objects=2, max_overlap=1.0, seed=3)
    tight = data.make_scenes(digits, 400, side=30, max_objects=2, seed=3)
    np.testing.assert_array_equal(loose.counts, tight.counts)
    # With two digits, ink shared by both squares is lost to the max; less overlap, more ink.
    two = tight.counts == 2
    ink = [s.images[two].reshape(two.sum(), -1).sum(1).mean() for s in (loose, tight)]
    assert ink[1] > ink[0]


def test_each_further_object_is_less_likely_a_priori(air):
    cfg = air.Config()
    probs = [air.pres_prob(cfg, t) for t in range(4)]
    np.testing.assert_allclose(probs, [0.01, 0.01**2.3, 0.01**5, 0.01**5], rtol=1e-6)
    model = air.make_model(air.Config(side=12, steps=2))
    params = air.init_params(jax.random.key(0), air.Config(side=12, steps=2))["model"]
    choices = {"pres_0": 1, "pres_1": 0, "x": jnp.zeros((12, 12)),
               "where_0": jnp.array([3.0, 0.0, 0.0]), "what_0": jnp.zeros(50),
               "where_1": jnp.zeros(3), "what_1": jnp.zeros(50)}
    logp, _ = model.assess(choices, params)
    choices["pres_1"] = 1
    logp_two, _ = model.assess(choices, params)
    # Against a constant rho, only the second presence choice's prior differs.
    cheap = air.make_model(air.Config(side=12, steps=2, pres_exponents=(1.0,)))
    logp_cheap, _ = cheap.assess(choices, params)
    expected = jnp.log(0.01) - jnp.log(0.01**2.3)  # log Bernoulli(1; rho) at both
    np.testing.assert_allclose(logp_cheap - logp_two, expected, rtol=1e-4)
    assert logp_two < logp_cheap and jnp.isfinite(logp)


def test_resize_keeps_a_constant_image_and_the_mnist_reader_checks_its_input(air, tmp_path):
    data = air.air_data
    np.testing.assert_allclose(data.resize(np.full((8, 8), 0.7, np.float32), 21), 0.7, rtol=1e-6)
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.testing.assert_allclose(data.resize(image, 8), image)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.digit_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        data.digit_images(tmp_path / "missing")
    header = b"\x00\x00\x08\x03" + np.array([2, 28, 28], ">u4").tobytes()
    bad.write_bytes(header + bytes(2 * 28 * 28))
    assert data.digit_images(tmp_path).shape == (2, 28, 28)


def _direct_bilinear(image, r, c):
    """Bilinear interpolation at one point, zero outside the image, by its textbook formula."""
    h, w = image.shape

    def pixel(i, j):
        return image[i, j] if 0 <= i < h and 0 <= j < w else 0.0

    i, j = math.floor(r), math.floor(c)
    a, b = r - i, c - j
    return ((1 - a) * (1 - b) * pixel(i, j) + (1 - a) * b * pixel(i, j + 1)
            + a * (1 - b) * pixel(i + 1, j) + a * b * pixel(i + 1, j + 1))


def test_the_spatial_transformer_is_bilinear_sampling(air):
    rng = np.random.default_rng(0)
    window = rng.uniform(size=(air.WINDOW, air.WINDOW)).astype(np.float32)
    where = np.array([2.3, 0.4, -0.7], np.float32)
    side = 17
    canvas = np.asarray(air.object_to_image(jnp.asarray(window), jnp.asarray(where), side))
    u = np.linspace(-1.0, 1.0, side)
    for i in range(side):
        for j in range(side):
            r = (where[0] * u[i] + where[2] + 1) * (air.WINDOW - 1) / 2
            c = (where[0] * u[j] + where[1] + 1) * (air.WINDOW - 1) / 2
            assert canvas[i, j] == pytest.approx(_direct_bilinear(window, r, c), abs=1e-5)
    # Cutting the window back out at the same place inverts the placement where the window
    # lies on the canvas' pixel grid: scale 1 on a canvas of the window's size, shifted.
    shift = 4 * 2.0 / (air.WINDOW - 1)  # four pixels to the right
    placed = air.object_to_image(jnp.asarray(window), jnp.array([1.0, shift, 0.0]), air.WINDOW)
    np.testing.assert_allclose(placed[:, :-4], window[:, 4:], atol=1e-5)
    np.testing.assert_allclose(placed[:, -4:], 0.0, atol=1e-6)
    identity = jnp.array([1.0, 0.0, 0.0])
    cut = air.image_to_object(air.object_to_image(jnp.asarray(window), identity, air.WINDOW),
                              identity)
    np.testing.assert_allclose(cut, window, atol=1e-5)
    # Differentiable in the placement: d/dx of the placed image by finite differences.
    def total(x):
        return jnp.sum(air.object_to_image(jnp.asarray(window), jnp.array([2.3, x, -0.7]), side)
                       * jnp.asarray(canvas))

    eps = 1e-3
    numeric = (total(0.4 + eps) - total(0.4 - eps)) / (2 * eps)
    assert float(jax.grad(total)(0.4)) == pytest.approx(float(numeric), rel=2e-2)


def test_count_accuracy(air):
    assert air.count_accuracy([0, 1, 2, 2], np.array([0, 1, 1, 2])) == 0.75
    assert air.count_accuracy(jnp.array([3, 3]), [3, 3]) == 1.0
    with pytest.raises(ValueError, match="one count per image"):
        air.count_accuracy([0, 1], [0, 1, 2])


def test_absent_objects_are_masked_out_of_both_densities(air, tiny):
    cfg, params = tiny
    model, guide = air.make_model(cfg), air.make_guide(cfg)
    image = jnp.zeros((cfg.side, cfg.side))
    tr = guide.simulate(jax.random.key(3), params["guide"], image)
    choices = dict(tr.choices, pres_0=jnp.int32(0), pres_1=jnp.int32(1))
    moved = dict(choices, where_1=choices["where_1"] + 5.0, what_0=choices["what_0"] - 2.0)
    for gf, args in ((model, (params["model"],)), (guide, (params["guide"], image))):
        extra = {"x": image} if gf is model else {}
        a, _ = gf.assess(pv.merge(choices, extra), *args)
        b, _ = gf.assess(pv.merge(moved, extra), *args)
        assert float(a) == pytest.approx(float(b), abs=1e-5)
    # With no object, the model's density is the prior of the count and an empty canvas.
    log_p, canvas = model.assess(pv.merge(choices, {"x": image}), params["model"])
    np.testing.assert_array_equal(canvas, 0.0)
    pixels = cfg.side**2 * -math.log(air.PIXEL_STD * math.sqrt(2 * math.pi))
    second = air.pres_prob(cfg, 1)  # 0.3 ** 2.3: drawn (1) though absent, as the guide may
    assert float(log_p) == pytest.approx(math.log(1 - 0.3) + math.log(second) + pixels, rel=1e-5)


@pytest.mark.parametrize("name", ["reinforce", "reinforce-lb", "enum", "mvd", "hybrid",
                                  "iwae-reinforce", "iwae-mvd", "rws"])
def test_every_estimator_gives_a_finite_gradient(air, single, name):
    cfg, params = single
    if name == "reinforce-lb" and not air.has_learned_baseline():
        with pytest.raises(ValueError, match="needs pv.learned_baseline"):
            air.objective(name, cfg)
        return
    program = air.objective(name, cfg, k=2)
    image = jnp.asarray(air.air_data.make_scenes(air.air_data.digit_images("digits"), 1,
                                                 side=cfg.side, seed=1).images[0])

    @jax.jit
    def estimates(keys):
        def one(key):
            return jax.value_and_grad(lambda p: program.estimate(key, p, image))(params)

        return jax.vmap(one)(keys)

    values, grads = estimates(jax.random.split(jax.random.key(0), 4))
    assert values.shape == (4,) and bool(jnp.all(jnp.isfinite(values)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    # Over four draws (a draw without objects gives the decoder nothing), the presence
    # logits, the LSTM and the decoder all learn from every estimator.
    for part in (grads["guide"]["predict"], grads["guide"]["lstm"], grads["model"]["decoder"]):
        assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(part)) > 0, name


def test_the_presence_estimators_agree_on_the_gradient(air, single):
    """REINFORCE, MVD and enumeration estimate one gradient: the means of the presence
    logit's bias gradient agree within standard errors (|z| < 4, fixed seeds)."""
    cfg, params = single
    scenes = air.air_data.make_scenes(air.air_data.digit_images("digits"), 8, side=cfg.side,
                                      seed=2)
    image = jnp.asarray(scenes.images[np.argmax(scenes.counts)])
    draws = 300

    def moments(name):
        program = air.objective(name, cfg)

        @jax.jit
        def bias_grads(keys):
            def one(key):
                grads = jax.grad(lambda p: program.estimate(key, p, image))(params)
                return grads["guide"]["predict"]["b"][0]

            return jax.vmap(one)(keys)

        g = np.asarray(bias_grads(jax.random.split(jax.random.key(7), draws)), np.float64)
        return g.mean(), g.std(ddof=1) / math.sqrt(draws)

    means = {name: moments(name) for name in ("reinforce", "mvd", "enum")}
    for a, b in (("reinforce", "mvd"), ("reinforce", "enum"), ("mvd", "enum")):
        (ma, sa), (mb, sb) = means[a], means[b]
        assert abs(ma - mb) < 4 * math.hypot(sa, sb), (a, b, means)
    # The cases have real variance, and enumeration has the least of it.
    assert means["enum"][1] < means["reinforce"][1]
    assert means["reinforce"][1] > 0


def test_a_smoke_run_trains_evaluates_and_draws(air, tmp_path, capsys):
    # One estimator: the others' steps are the gradient test's; this checks the training loop.
    out = air.main(["--smoke", "--estimators", "mvd", "--out", str(tmp_path), "--no-progress"])
    assert out["estimators"] == ["mvd"]
    assert out["config"] == air.Config(side=24, steps=3, pres_prior=0.01)
    for name, row in out["rows"].items():
        assert 0.0 <= row["accuracy"] <= 1.0, name
        assert np.isfinite(row["elbo"]) and np.isfinite(row["objective"]), name
        # One evaluation before training and one after the single epoch.
        assert [c["epoch"] for c in row["curve"]] == [0.0, 1.0]
        assert row["curve"][0] == out["initial"] and row["seconds"] > 0
    for png in out["pngs"]:
        assert png.parent == tmp_path and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "count acc" in printed and "mvd" in printed and "s / epoch" in printed
    saved = json.loads((tmp_path / "air_results.json").read_text())
    assert saved["rows"]["mvd"]["curve"] == out["rows"]["mvd"]["curve"]
    assert saved["args"]["estimators"] == "['mvd']"


def test_the_command_line_refuses_unknown_estimators(air, capsys):
    with pytest.raises(SystemExit):
        air.parse_args(["--estimators", "reinforce,magic"])
    assert "unknown ['magic']" in capsys.readouterr().err
    assert air.parse_args(["--max-objects", "3"]).steps == 4
    names = air.parse_args([]).estimators
    assert ("reinforce-lb" in names) == air.has_learned_baseline()
