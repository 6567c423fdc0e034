"""Attend-Infer-Repeat: scenes with a variable number of digits, trained with eight estimators.

AIR (Eslami et al. 2016) explains an image as a sum of up to `--steps` objects. The model, for
t = 0, 1, ...: a presence choice z_t ~ Bernoulli(rho_t) (an object exists at step t while every
choice so far was 1; rho_t = 0.01 ** (1, 2.3, 5)[t], each further object far less likely: the
PLDI 2024 artifact's exponents with the rho of Pyro's AIR example), where_t = (s, x, y) ~
N((3, 0, 0), diag(0.2, 1, 1)^2) (a scale and a shift of a 20x20 window), what_t ~ N(0, I_50);
the decoder (50-200-400) draws the object in its window, a spatial transformer (bilinear
sampling) places it on the canvas, and the image is N(sum of the objects, 0.3^2) per pixel. The
guide is an LSTM with 256 units that reads the image and the previous step's latents and proposes
z_t, where_t; the encoder (400-200-100) reads the window cut out at where_t and proposes
what_t. The sizes are those of the PLDI 2024 artifact. where and what of absent objects are
drawn but masked out of both densities, as in Pyro's AIR.

Both are `pv.gen` functions and the objective is `pv.elbo` (or `pv.iwae`, `pv.rws`) of one
image, which `pv.fit` vmaps over minibatches of 64. The estimator changes only the strategies
at the presence choices (`pv.with_strategies`), never the model code:

* reinforce: the score function at every presence choice, reparameterization elsewhere;
* reinforce-lb: the same with a learned baseline (a linear map of the LSTM state, trained on
  its squared error; needs `pv.learned_baseline`);
* enum: exact enumeration of the presence choices (2^steps branches);
* mvd: measure-valued derivatives of the presence choices;
* hybrid: MVD at the first presence choice, enumeration at the later ones;
* iwae-reinforce, iwae-mvd: the K-particle bound (`--k`) with REINFORCE or MVD;
* rws: reweighted wake-sleep, wake-p for the model and wake-q for the guide (K particles).

Data: generated scenes of 0-2 scikit-learn digits on a 50x50 canvas (`examples/air_data.py`;
`--side` for smaller canvases, `--max-objects 3`), or MNIST digits with `--mnist PATH`. The
script prints a table of held-out count accuracy and ELBO per estimator, and writes a figure of
both against epochs and wall-clock time and a PNG of reconstructions with the inferred boxes.

    python examples/air.py                                       # 10 epochs, 8 estimators: 7 min
    python examples/air.py --side 32 --num-images 2000           # a quicker, smaller canvas
    python examples/air.py --smoke                               # the test's size: seconds

References:
  Eslami, Heess, Weber, Tassa, Szepesvari, Kavukcuoglu & Hinton, "Attend, Infer, Repeat: Fast
  Scene Understanding with Generative Models", NeurIPS 2016.
  Becker, Lew, Wang, Ghavami, Huot, Rinard & Mansinghka, "Probabilistic Programming with
  Programmable Variational Inference", PLDI 2024 (Fig. 7).
  Jaderberg, Simonyan, Zisserman & Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv


def _load_data_module():
    # A sibling file, loaded by path so that the example runs from anywhere and under pytest.
    spec = importlib.util.spec_from_file_location(
        "air_data", pathlib.Path(__file__).with_name("air_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


air_data = _load_data_module()

WINDOW = 20  # an object is drawn in a WINDOW x WINDOW window
WHAT = 50  # dimension of an object's appearance code
HIDDEN = 256  # LSTM units of the guide
WHERE_LOC = jnp.array([3.0, 0.0, 0.0])  # (scale, x, y): a window a third of the canvas wide
WHERE_SCALE = jnp.array([0.2, 1.0, 1.0])
PIXEL_STD = 0.3


class Config(NamedTuple):
    side: int = 50  # the canvas is side x side
    steps: int = 3  # at most this many objects
    # rho: the prior probability of the first object. 0.01, as in Pyro's AIR example: at 0.05
    # training often settles on two windows per digit.
    pres_prior: float = 0.01
    # Object t is present, given that object t - 1 is, with probability rho ** pres_exponents[t]
    # (the last exponent for later steps), the PLDI 2024 artifact's prior: each further object
    # is far less likely.
    pres_exponents: tuple = (1.0, 2.3, 5.0)


def pres_prob(cfg: Config, t: int) -> float:
    """The prior probability that object t is present, given that object t - 1 is."""
    return cfg.pres_prior ** cfg.pres_exponents[min(t, len(cfg.pres_exponents) - 1)]


# -- the spatial transformer ----------------------------------------------------------------------


def interpolation_weights(coords, n):
    """Bilinear weights (len(coords), n): row i interpolates an n-pixel axis at coords[i].

    The weight of pixel j is the tent max(0, 1 - |coords[i] - j|): the two neighbours of a
    coordinate share it linearly, and a coordinate off the axis gets less than full weight
    (zero beyond one pixel outside), as with zero padding.
    """
    return jax.nn.relu(1.0 - jnp.abs(coords[:, None] - jnp.arange(n)[None, :]))


def resample(image, rows, cols):
    """`image` (H, W) bilinearly sampled on the grid `rows` x `cols` of pixel coordinates.

    Scaling and shifting keep the axes apart, so bilinear sampling is two matrix products
    with tent weights, ``R @ image @ C.T``: differentiable in the image and the coordinates,
    without gathers (whose scatter gradients compile slowly on CPU).
    """
    h, w = image.shape
    return interpolation_weights(rows, h) @ image @ interpolation_weights(cols, w).T


def _pixels(u, n):
    """Normalized coordinates in [-1, 1] to pixel coordinates of an n-pixel axis."""
    return (u + 1.0) * (n - 1) / 2.0


def object_to_image(window, where, side):
    """The (WINDOW, WINDOW) `window` placed on a (side, side) canvas by where = (s, x, y).

    A canvas point u (normalized, in [-1, 1]^2) shows the window at s u + (x, y): the window
    covers a square of width 2/s centred at -(x, y)/s.
    """
    s, x, y = where[0], where[1], where[2]
    u = jnp.linspace(-1.0, 1.0, side)
    rows = _pixels(s * u + y, window.shape[0])
    cols = _pixels(s * u + x, window.shape[1])
    return resample(window, rows, cols)


def image_to_object(image, where):
    """The (WINDOW, WINDOW) window that `object_to_image` would place by `where`, cut out."""
    s, x, y = where[0], where[1], where[2]
    w = jnp.linspace(-1.0, 1.0, WINDOW)
    rows = _pixels((w - y) / s, image.shape[0])
    cols = _pixels((w - x) / s, image.shape[1])
    return resample(image, rows, cols)


def box(where, side):
    """(left, top, width) in canvas pixels of the window that `where` places."""
    s, x, y = (float(v) for v in where)
    width = 2.0 / s * (side - 1) / 2.0
    return _pixels((-1.0 - x) / s, side), _pixels((-1.0 - y) / s, side), width


# -- the networks ---------------------------------------------------------------------------------


def dense_init(key, n_in, n_out):
    return {"w": jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros(n_out)}


def dense(layer, x):
    return x @ layer["w"] + layer["b"]


def lstm_init(key, n_in, hidden):
    k_in, k_h = jax.random.split(key)
    # Gates in the order input, forget, cell, output; the forget gate starts open (bias 1).
    bias = jnp.zeros(4 * hidden).at[hidden : 2 * hidden].set(1.0)
    return {"w_in": jax.random.normal(k_in, (n_in, 4 * hidden)) / np.sqrt(n_in),
            "w_h": jax.random.normal(k_h, (hidden, 4 * hidden)) / np.sqrt(hidden), "b": bias}


def lstm(cell, carry, x):
    """One step of an LSTM cell: (c, h), x -> (c', h')."""
    c, h = carry
    i, f, g, o = jnp.split(x @ cell["w_in"] + h @ cell["w_h"] + cell["b"], 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return c, jax.nn.sigmoid(o) * jnp.tanh(c)


def decode(dec, what):
    """what (50) -> 200 -> the window's 400 pixel intensities in (0, 1)."""
    h = jax.nn.leaky_relu(dense(dec["hidden"], what))
    return jax.nn.sigmoid(dense(dec["out"], h) - 2.0)  # -2: windows start dark


def encode(enc, window):
    """A window's 400 pixels -> 200 -> the loc and scale of q(what), 50 each."""
    out = dense(enc["out"], jax.nn.leaky_relu(dense(enc["hidden"], window)))
    return out[:WHAT], jax.nn.softplus(out[WHAT:]) + 1e-4


def predict(layer, h):
    """LSTM state -> the logit of presence, and the loc and scale of q(where)."""
    out = dense(layer, h)
    return out[0], WHERE_LOC + out[1:4], jax.nn.softplus(out[4:7] - 2.0) + 1e-4


def init_params(key, cfg: Config):
    """The networks as plain pytrees: the model's decoder; the guide's LSTM, its read-out,
    the encoder, and the read-out of the learned baseline."""
    k = jax.random.split(key, 7)
    lstm_in = cfg.side * cfg.side + 3 + WHAT + 1
    return {
        "model": {"decoder": {"hidden": dense_init(k[0], WHAT, 200),
                              "out": dense_init(k[1], 200, WINDOW * WINDOW)}},
        "guide": {
            "lstm": lstm_init(k[2], lstm_in, HIDDEN),
            "predict": dense_init(k[3], HIDDEN, 7),
            "encoder": {"hidden": dense_init(k[4], WINDOW * WINDOW, 200),
                        "out": dense_init(k[5], 200, 2 * WHAT)},
            "baseline": dense_init(k[6], HIDDEN, 1),
        },
    }


# -- the model and the guide ----------------------------------------------------------------------


def make_model(cfg: Config) -> pv.GenerativeFunction:
    """AIR's generative model of one (side, side) image; returns the mean canvas."""

    @pv.gen
    def model(params):
        canvas = jnp.zeros((cfg.side, cfg.side))
        present = jnp.float32(1.0)
        for t in range(cfg.steps):
            z = pv.sample(f"pres_{t}", dist.Bernoulli(probs=pres_prob(cfg, t)))
            present = present * z
            on = present > 0
            where = pv.sample(f"where_{t}", dist.Normal(WHERE_LOC, WHERE_SCALE).to_event(1)
                              .mask(on))
            what = pv.sample(f"what_{t}", dist.Normal(jnp.zeros(WHAT), 1.0).to_event(1)
                             .mask(on))
            window = decode(params["decoder"], what).reshape(WINDOW, WINDOW)
            canvas = canvas + present * object_to_image(window, where, cfg.side)
        pv.sample("x", dist.Normal(canvas, PIXEL_STD).to_event(2))
        return canvas

    return model


def make_guide(cfg: Config, learned_baseline: bool = False) -> pv.GenerativeFunction:
    """AIR's recurrent guide for one image: presence, where and what at each step.

    After an absent object the remaining presence choices are drawn from the prior (they
    change nothing, and their log densities cancel in the model's), so every presence
    probability stays strictly inside (0, 1) and enumeration and MVD see finite terms.
    """

    @pv.gen
    def guide(params, image):
        flat = image.reshape(-1)
        carry = (jnp.zeros(HIDDEN), jnp.zeros(HIDDEN))
        where, what, present = jnp.zeros(3), jnp.zeros(WHAT), jnp.float32(1.0)
        for t in range(cfg.steps):
            rho = pres_prob(cfg, t)
            prior_logit = np.log(rho) - np.log1p(-rho)
            inputs = jnp.concatenate([flat, where, what, present[None]])
            carry = lstm(params["lstm"], carry, inputs)
            h = carry[1]
            logit, where_loc, where_scale = predict(params["predict"], h)
            strategy = None
            if learned_baseline:
                # The baseline reads the LSTM state but does not train it.
                b = dense(params["baseline"], jax.lax.stop_gradient(h))[0]
                strategy = pv.reinforce(baseline=pv.learned_baseline(b))
            logit = present * logit + (1 - present) * prior_logit
            z = pv.sample(f"pres_{t}", dist.Bernoulli(logits=logit), strategy=strategy)
            present = present * z
            on = present > 0
            where = pv.sample(f"where_{t}", dist.Normal(where_loc, where_scale).to_event(1)
                              .mask(on))
            window = image_to_object(image, where).reshape(-1)
            what_loc, what_scale = encode(params["encoder"], window)
            what = pv.sample(f"what_{t}", dist.Normal(what_loc, what_scale).to_event(1)
                             .mask(on))
        return present

    return guide


# -- the estimators -------------------------------------------------------------------------------

ESTIMATORS = ("reinforce", "reinforce-lb", "enum", "mvd", "hybrid", "iwae-reinforce",
              "iwae-mvd", "rws")
STRATEGIES = {
    "reinforce": {"*pres_*": pv.reinforce},
    "reinforce-lb": {},  # the guide names its strategy: REINFORCE with its learned baseline
    "enum": {"*pres_*": pv.enum},
    "mvd": {"*pres_*": pv.mvd},
    "hybrid": {"pres_0": pv.mvd, "pres_*": pv.enum},
    "iwae-reinforce": {"*pres_*": pv.reinforce},
    "iwae-mvd": {"*pres_*": pv.mvd},
    "rws": {},  # the guide is not differentiated through its draws
}


def has_learned_baseline() -> bool:
    return hasattr(pv, "learned_baseline")


def _unrolled_iwae(model, guide, k):
    """The IWAE bound with K particles drawn one after another, each under its own address.

    `pv.iwae` vmaps its particles, which only strategies without a continuation can draw in;
    MVD evaluates the rest of the program, so its particles are written out.
    """
    particles = []
    for i in range(k):
        def one(params, image, i=i):
            return pv.sample(f"particle_{i}", guide(params, image))

        particles.append(pv.gen(one))

    def bound(params, image):
        log_ws = []
        for particle in particles:
            tr = pv.simulate(particle, params["guide"], image)
            choices = next(iter(tr.choices.values()))
            log_p, _ = pv.density(model, pv.merge(choices, {"x": image}), params["model"])
            log_ws.append(log_p - tr.score)
        return jax.nn.logsumexp(jnp.stack(log_ws)) - jnp.log(k)

    return bound


def objective(name: str, cfg: Config, k: int = 2) -> pv.Expectation:
    """The expectation program of one image (params, image) -> estimate, for estimator `name`."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}.")
    if name == "reinforce-lb" and not has_learned_baseline():
        raise ValueError("estimator 'reinforce-lb' needs pv.learned_baseline, which this "
                         "version of progvi does not have; choose another estimator.")
    model, guide = make_model(cfg), make_guide(cfg, learned_baseline=name == "reinforce-lb")

    def args(params, image):
        return {"model_args": (params["model"],), "guide_args": (params["guide"], image)}

    if name == "iwae-mvd":
        program = _unrolled_iwae(model, guide, k)
    elif name == "iwae-reinforce":
        def program(params, image):
            return pv.iwae(model, guide, {"x": image}, k, **args(params, image))
    elif name == "rws":
        def program(params, image):
            return pv.rws(model, guide, {"x": image}, k, **args(params, image))
    else:
        def program(params, image):
            return pv.elbo(model, guide, {"x": image}, **args(params, image))
    program = pv.expectation(program)
    return pv.with_strategies(program, STRATEGIES[name]) if STRATEGIES[name] else program


# -- evaluation -----------------------------------------------------------------------------------


def count_accuracy(inferred, true) -> float:
    """The fraction of images whose inferred object count equals the true one."""
    inferred, true = np.asarray(inferred), np.asarray(true)
    if inferred.shape != true.shape:
        raise ValueError(f"count_accuracy: {inferred.shape} inferred counts for {true.shape} "
                         "true ones; pass one count per image to each.")
    return float(np.mean(inferred == true))


def make_evaluator(cfg: Config):
    """A jitted (key, params, images) -> (counts, latents, mean canvases, ELBO estimates)."""
    model, guide = make_model(cfg), make_guide(cfg)
    elbo = objective("reinforce", cfg)

    def one(key, params, image):
        k_guide, k_elbo = jax.random.split(key)
        tr = guide.simulate(k_guide, params["guide"], image)
        pres = jnp.stack([tr.choices[f"pres_{t}"] for t in range(cfg.steps)]).astype(jnp.float32)
        present = jnp.cumprod(pres)
        where = jnp.stack([tr.choices[f"where_{t}"] for t in range(cfg.steps)])
        _, canvas = model.assess(pv.merge(tr.choices, {"x": image}), params["model"])
        return (jnp.sum(present).astype(jnp.int32), (present, where), canvas,
                elbo.estimate(k_elbo, params, image))

    @jax.jit
    def evaluate(key, params, images):
        keys = jax.random.split(key, len(images))
        return jax.vmap(one, in_axes=(0, None, 0))(keys, params, images)

    return evaluate


# -- pictures -------------------------------------------------------------------------------------


def plot_curves(path, results, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey="row")
    for name, row in results.items():
        curve = row["curve"]
        epochs = [c["epoch"] for c in curve]
        seconds = [c["seconds"] for c in curve]
        for col, xs in enumerate((epochs, seconds)):
            axes[0, col].plot(xs, [c["accuracy"] for c in curve], marker=".", label=name)
            axes[1, col].plot(xs, [c["elbo"] for c in curve], marker=".", label=name)
    for col, label in enumerate(("epoch", "training time (s, wall-clock)")):
        axes[1, col].set_xlabel(label)
    axes[0, 0].set_ylabel("held-out count accuracy")
    axes[1, 0].set_ylabel("held-out ELBO (nats per image)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_reconstructions(path, images, canvases, latents, counts, side, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    present, where = latents
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        for row, picture in enumerate((images[i], canvases[i])):
            ax = axes[row, i]
            ax.imshow(np.asarray(picture), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for t in range(present.shape[1]):
                if present[i, t] > 0:
                    left, top, width = box(where[i, t], side)
                    ax.add_patch(Rectangle((left, top), width, width, fill=False, lw=1.2,
                                           edgecolor="rgb"[t % 3]))
        axes[0, i].set_title(f"true {int(counts[i])}", fontsize=8)
    axes[0, 0].set_ylabel("data", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train AIR on scenes of digits with several gradient estimators.")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help=f"comma-separated, from: {', '.join(ESTIMATORS)}")
    parser.add_argument("--side", type=int, default=air_data.PAPER_SIDE)
    parser.add_argument("--max-objects", type=int, default=2, help="digits per scene: 0 to this")
    parser.add_argument("--steps", type=int, default=None,
                        help="objects the model can explain (default: max-objects + 1)")
    parser.add_argument("--pres-prior", type=float, default=0.01,
                        help="rho: object t's prior is rho ** (1, 2.3, 5)[t]")
    parser.add_argument("--num-images", type=int, default=6000, help="training scenes")
    parser.add_argument("--held-out", type=int, default=1000, help="evaluation scenes")
    parser.add_argument("--mnist", type=pathlib.Path, default=None,
                        help="a folder with MNIST's train-images-idx3-ubyte; default: sklearn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="adam's learning rate, decayed to --lr-final over the run (cosine)")
    parser.add_argument("--lr-final", type=float, default=None,
                        help="the learning rate at the end (default: --lr, a constant rate)")
    parser.add_argument("--k", type=int, default=2, help="particles of iwae-* and rws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        parser.error(f"--estimators {args.estimators!r}: unknown {unknown}; choose from "
                     f"{', '.join(ESTIMATORS)}")
    if "reinforce-lb" in names and not has_learned_baseline():
        if args.estimators == parser.get_default("estimators"):
            names.remove("reinforce-lb")  # the default list runs without it
        else:
            parser.error("--estimators reinforce-lb needs pv.learned_baseline, which this "
                         "version of progvi lacks; leave it out.")
    args.estimators = names
    if args.steps is None:
        args.steps = args.max_objects + 1
    if args.k < 1:
        parser.error(f"--k {args.k}: it must be at least 1")
    if args.lr_final is None:
        args.lr_final = args.lr
    if not args.lr > 0.0 <= args.lr_final:
        parser.error(f"--lr {args.lr} --lr-final {args.lr_final}: the learning rate must be "
                     "positive and the final one at least 0")
    if not 0.0 < args.pres_prior < 1.0:
        parser.error(f"--pres-prior {args.pres_prior}: a probability strictly in (0, 1)")
    if args.smoke:
        args.side, args.num_images, args.held_out = 24, 32, 32
        args.epochs, args.batch_size, args.evals_per_epoch = 1, 16, 1
    if args.side < 12:
        parser.error(f"--side {args.side}: at least 12 pixels")
    return args


def main(argv=None) -> dict:
    """Trains each estimator, prints the table, writes the PNGs; returns the numbers."""
    args = parse_args(argv)
    cfg = Config(side=args.side, steps=args.steps, pres_prior=args.pres_prior)
    digits = air_data.digit_images(args.mnist if args.mnist else "digits")
    train = air_data.make_scenes(digits, args.num_images, side=args.side,
                                 max_objects=args.max_objects, seed=args.seed)
    test = air_data.make_scenes(digits, args.held_out, side=args.side,
                                max_objects=args.max_objects, seed=args.seed + 1)
    images, test_images = jnp.asarray(train.images), jnp.asarray(test.images)
    key = jax.random.key(args.seed)
    init_key, fit_key, eval_key = jax.random.split(key, 3)
    params = init_params(init_key, cfg)
    evaluate = make_evaluator(cfg)
    steps_per_epoch = args.num_images // args.batch_size
    if steps_per_epoch < 1:
        raise SystemExit(f"--num-images {args.num_images} is fewer than one batch of "
                         f"{args.batch_size}.")
    every = max(steps_per_epoch // args.evals_per_epoch, 1)
    schedule = optax.cosine_decay_schedule(args.lr, steps_per_epoch * args.epochs,
                                           alpha=args.lr_final / args.lr)
    optimizer = optax.adam(schedule)

    def measure(params, epoch, seconds):
        counts, _, _, elbos = evaluate(eval_key, params, test_images)
        return {"epoch": epoch, "seconds": seconds,
                "accuracy": count_accuracy(counts, test.counts),
                "elbo": float(jnp.mean(elbos))}

    results, trained = {}, {}
    initial = measure(params, 0.0, 0.0)
    for i, name in enumerate(args.estimators):
        program = objective(name, cfg, args.k)
        curve = [initial]
        clock = {"start": time.perf_counter(), "evaluating": 0.0}

        def record(step, state, value, curve=curve, clock=clock):
            jax.block_until_ready(state.params)
            now = time.perf_counter()
            training = now - clock["start"] - clock["evaluating"]
            curve.append(measure(state.params, step / steps_per_epoch, training))
            clock["evaluating"] += time.perf_counter() - now

        result = pv.fit(
            jax.random.fold_in(fit_key, i), program, params, optimizer, direction="maximize",
            num_epochs=args.epochs, data=images, batch_size=args.batch_size,
            per_datapoint=True, callback=record, callback_every=every,
            progress=not args.no_progress,
        )
        trained[name] = result.params
        final = curve[-1]
        results[name] = {"accuracy": final["accuracy"], "elbo": final["elbo"],
                         "seconds": final["seconds"], "curve": curve,
                         "objective": float(np.mean(result.history[-every:]))}
        # Written after each estimator, so that a long run keeps what it has measured.
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "air_results.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "initial": initial,
             "rows": results}, indent=1))
        # Each estimator compiles programs of its own; without dropping the last one's, a run
        # of enumeration then MVD on the 50x50 canvas failed in LLVM ("Cannot allocate memory").
        jax.clear_caches()

    source = "MNIST" if args.mnist else "scikit-learn"
    print(f"\n{args.num_images} training / {args.held_out} held-out {args.side}x{args.side} "
          f"scenes of 0-{args.max_objects} {source} digits; {cfg.steps} steps; "
          f"{args.epochs} epochs of batch {args.batch_size} (lr {args.lr} to {args.lr_final}, "
          f"K = {args.k}).")
    print(f"At initialization: count accuracy {initial['accuracy']:.3f}, ELBO "
          f"{initial['elbo']:.1f}. Time: wall-clock of training, compilation included.")
    print(f"{'estimator':<16}{'count acc':>10}{'ELBO':>10}{'objective':>11}{'time (s)':>10}"
          f"{'s / epoch':>11}")
    for name, row in results.items():
        print(f"{name:<16}{row['accuracy']:>10.3f}{row['elbo']:>10.1f}{row['objective']:>11.1f}"
              f"{row['seconds']:>10.1f}{row['seconds'] / args.epochs:>11.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    curves_png = args.out / "air_curves.png"
    plot_curves(curves_png, results,
                f"progvi AIR: {args.side}x{args.side} scenes of 0-{args.max_objects} digits, "
                f"{args.num_images} training scenes, batch {args.batch_size}")
    best = max(results, key=lambda n: results[n]["accuracy"])
    shown = slice(0, min(8, args.held_out))
    # The whole held-out set (the shape the evaluations compiled), then its first few scenes.
    _, latents, canvases, _ = jax.tree.map(lambda a: np.asarray(a)[shown],
                                           evaluate(eval_key, trained[best], test_images))
    recon_png = args.out / "air_reconstructions.png"
    plot_reconstructions(recon_png, test.images[shown], canvases, latents, test.counts[shown],
                         args.side,
                         f"{best}: held-out scenes (top) and reconstructions (bottom) with "
                         "the inferred windows")
    print(f"wrote {curves_png}, {recon_png} and {args.out / 'air_results.json'}")
    return {"initial": initial, "rows": results, "pngs": (curves_png, recon_png),
            "config": cfg, "estimators": args.estimators}


if __name__ == "__main__":
    main()
