"""A variational autoencoder written as expectation programs, trained with `pv.fit`.

The model: z ~ N(0, I) in `--latent` dimensions, each pixel x_d | z ~ Bernoulli(sigmoid(f(z)_d))
with f an MLP; the guide: z | x ~ N(mean(x), diag(std(x)^2)) with an MLP encoder. The objective is
a program for one datapoint, which `pv.fit` vmaps over each minibatch:

* ELBO: log p(x, z) - log q(z | x) at one reparameterized draw z ~ q;
* IWAE: log (1/K) sum_k p(x, z_k) / q(z_k | x) with K reparameterized draws taken at one site
  of batch shape (K, latent).

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), binarized, with a held-out
split; or MNIST from a folder of IDX files given with `--mnist PATH` (train-images-idx3-ubyte and
t10k-images-idx3-ubyte, optionally gzipped; never downloaded). After training, the script prints
the ELBO and IWAE bounds on the training and held-out sets and writes a PNG of held-out images,
their reconstructions and samples from the model to `--out`.

    python examples/vae.py                               # ELBO on digits, a minute or two on CPU
    python examples/vae.py --objective iwae --k 5
    python examples/vae.py --mnist ~/data/mnist --epochs 20
    python examples/vae.py --smoke                       # a few seconds: the test's size

References:
  Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
  Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import importlib
import pathlib
import struct
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv

EVAL_K = 50  # draws of the held-out IWAE bound, a tighter estimate of log p(x)


def require_extras(*modules: str) -> None:
    """Stops with the install command when an optional dependency of the examples is missing."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise SystemExit(
                f'examples/vae.py needs {module}: pip install "progvi[examples]"'
            ) from error


# -- data -----------------------------------------------------------------------------------------


class Dataset(NamedTuple):
    name: str
    train: np.ndarray  # (N, pixels) float32 in {0, 1}
    test: np.ndarray  # held-out images, same layout
    side: int  # images are side x side


def load_digits(seed: int, held_out: int = 297) -> Dataset:
    """scikit-learn's 8x8 digits (grey levels 0-16), binarized at 8, split at random."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = (sklearn_digits().data > 8).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    return Dataset("digits", images[order[held_out:]], images[order[:held_out]], 8)


def read_idx(path: pathlib.Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file: it does not start with two zero bytes.")
    if raw[2] != 0x08:
        raise ValueError(
            f"{path}: IDX type code {raw[2]:#04x}; only unsigned bytes (0x08) are read."
        )
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but the file has "
                         f"{len(raw)} bytes; is it truncated?")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx")
                 + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"--mnist {folder}: no {stem} (or {stem}.gz) there. Put the MNIST IDX files "
        "train-images-idx3-ubyte and t10k-images-idx3-ubyte in that folder; this script never "
        "downloads them."
    )


def load_mnist(folder: pathlib.Path) -> Dataset:
    """MNIST images from IDX files, binarized at half intensity; t10k is the held-out set."""
    folder = pathlib.Path(folder).expanduser()

    def images(stem):
        raw = read_idx(_find(folder, stem))
        return (raw.reshape(len(raw), -1) > 127).astype(np.float32)

    train, test = images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")
    return Dataset("mnist", train, test, int(round(np.sqrt(train.shape[1]))))


# -- the model and the objectives -----------------------------------------------------------------


def init_params(key, pixels: int, hidden: int, latent: int):
    def dense(key, n_in, n_out):
        return {"w": jax.random.normal(key, (n_in, n_out)) * np.sqrt(2.0 / (n_in + n_out)),
                "b": jnp.zeros(n_out)}

    k = jax.random.split(key, 5)
    return {
        "enc": {"hidden": dense(k[0], pixels, hidden), "mean": dense(k[1], hidden, latent),
                "log_std": dense(k[2], hidden, latent)},
        "dec": {"hidden": dense(k[3], latent, hidden), "logits": dense(k[4], hidden, pixels)},
    }


def _dense(layer, x):
    return x @ layer["w"] + layer["b"]


def encode(enc, x):
    h = jnp.tanh(_dense(enc["hidden"], x))
    return _dense(enc["mean"], h), _dense(enc["log_std"], h)


def decode(dec, z):
    return _dense(dec["logits"], jnp.tanh(_dense(dec["hidden"], z)))


def log_weight(params, x, z, q):
    """log p(x, z) - log q(z | x) for z of shape (..., latent)."""
    log_lik = dist.Bernoulli(logits=decode(params["dec"], z)).log_prob(x).sum(-1)
    log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return log_lik + log_prior - q.log_prob(z).sum(-1)


@pv.expectation
def elbo(params, x):
    """The ELBO of one image: one reparameterized draw from the encoder's Gaussian."""
    mean, log_std = encode(params["enc"], x)
    q = dist.Normal(mean, jnp.exp(log_std))
    z = pv.sample("z", q)
    return log_weight(params, x, z, q)


def make_iwae(k: int) -> pv.Expectation:
    """The IWAE bound of one image with `k` importance samples (k is static: it is a shape)."""

    @pv.expectation
    def iwae(params, x):
        mean, log_std = encode(params["enc"], x)
        shape = (k, mean.shape[-1])
        q = dist.Normal(jnp.broadcast_to(mean, shape), jnp.broadcast_to(jnp.exp(log_std), shape))
        z = pv.sample("z", q)  # (k, latent): k draws at one site
        return jax.nn.logsumexp(log_weight(params, x, z, q)) - jnp.log(k)

    iwae.__name__ = f"iwae_{k}"
    return iwae


def mean_estimate(key, objective, params, data, chunk: int = 256) -> float:
    """The average over `data` of one estimate per image.

    Images go through in chunks of one padded shape, so that each objective compiles once
    whatever the size of the set, and memory stays bounded (IWAE-50 on MNIST).
    """
    total = 0.0
    for start in range(0, len(data), chunk):
        part = np.asarray(data[start : start + chunk])
        mask = np.zeros(chunk, np.float32)
        mask[: len(part)] = 1.0
        part = np.pad(part, ((0, chunk - len(part)), (0, 0)))
        total += float(_chunk_sum(objective, jax.random.fold_in(key, start), params, part, mask))
    return total / len(data)


@functools.partial(jax.jit, static_argnums=0)
def _chunk_sum(objective, key, params, images, mask):
    keys = jax.random.split(key, len(images))
    values = jax.vmap(lambda k, x: objective.estimate(k, params, x))(keys, images)
    return jnp.sum(jnp.where(mask > 0, values, 0.0))


# -- the picture ----------------------------------------------------------------------------------


def tile(images, side, pad=1):
    """Images in one row, separated by `pad` blank pixels, as one array."""
    row = np.ones((side, len(images) * (side + pad) - pad), np.float32)
    for i, image in enumerate(np.asarray(images)):
        row[:, i * (side + pad) : i * (side + pad) + side] = 1.0 - image.reshape(side, side)
    return row


def plot(path, key, params, dataset, history, title):
    """Held-out images, their reconstructions, samples, and the training curve, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, side = 10, dataset.side
    originals = dataset.test[:n]
    mean, _ = encode(params["enc"], jnp.asarray(originals))
    reconstructions = jax.nn.sigmoid(decode(params["dec"], mean))  # pixel probabilities
    prior_draws = jax.random.normal(key, (n, mean.shape[-1]))
    samples = jax.nn.sigmoid(decode(params["dec"], prior_draws))
    rows = [("held-out", originals), ("reconstructed", reconstructions), ("sampled", samples)]

    fig, (images, curve) = plt.subplots(2, 1, figsize=(7, 5), height_ratios=[3, 2])
    canvas = np.concatenate([np.pad(tile(x, side), ((1, 1), (0, 0)), constant_values=1.0)
                             for _, x in rows])
    images.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    images.set_yticks([(side + 2) * (r + 0.5) for r in range(len(rows))],
                      [label for label, _ in rows])
    images.set_xticks([])
    window = max(1, len(history) // 100)
    smooth = np.convolve(history, np.ones(window) / window, mode="valid")
    curve.plot(np.arange(len(smooth)) + window, smooth, lw=1)
    curve.set_xlabel("step")
    curve.set_ylabel("training objective (nats)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a VAE with progvi (ELBO or IWAE).")
    parser.add_argument("--objective", choices=["elbo", "iwae"], default="elbo")
    parser.add_argument("--k", type=int, default=5, help="importance samples for --objective iwae")
    parser.add_argument("--mnist", type=pathlib.Path, default=None,
                        help="a folder with MNIST IDX files (default: the 8x8 digits)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 500 digits, 20 MNIST")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--latent", type=int, default=None, help="default: 8 digits, 10 MNIST")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"--k {args.k}: the number of importance samples must be at least 1")
    if args.smoke:
        args.epochs = args.epochs or 8
        args.hidden, args.latent = 32, args.latent or 4
    args.epochs = args.epochs or (20 if args.mnist else 500)
    args.latent = args.latent or (10 if args.mnist else 8)
    return args


def main(argv=None) -> dict:
    """Trains, prints the table, writes the PNG; returns the numbers for tests."""
    args = parse_args(argv)
    require_extras("matplotlib", *([] if args.mnist else ["sklearn"]))
    dataset = load_mnist(args.mnist) if args.mnist else load_digits(args.seed)
    if args.smoke:
        dataset = dataset._replace(train=dataset.train[:600], test=dataset.test[:200])
    pixels = dataset.train.shape[1]
    key = jax.random.key(args.seed)
    init_key, fit_key, eval_key, plot_key = jax.random.split(key, 4)

    objective = elbo if args.objective == "elbo" else make_iwae(args.k)
    bounds = {"ELBO": elbo}
    if args.objective == "iwae":
        bounds[f"IWAE-{args.k}"] = objective
    bounds[f"IWAE-{EVAL_K}"] = make_iwae(EVAL_K)

    def evaluate(params, data):
        return {name: mean_estimate(jax.random.fold_in(eval_key, i), b, params, data)
                for i, (name, b) in enumerate(bounds.items())}

    params = init_params(init_key, pixels, args.hidden, args.latent)
    before = evaluate(params, dataset.test)
    result = pv.fit(
        fit_key, objective, params, optax.adam(args.lr), direction="maximize",
        num_epochs=args.epochs, data=dataset.train,
        batch_size=min(args.batch_size, len(dataset.train)), per_datapoint=True,
        progress=not args.no_progress,
    )
    train_values = evaluate(result.params, dataset.train)
    test_values = evaluate(result.params, dataset.test)

    trained = "ELBO" if args.objective == "elbo" else f"IWAE (K={args.k})"
    print(f"\n{dataset.name}: {len(dataset.train)} training / {len(dataset.test)} held-out "
          f"images; trained {trained} for {args.epochs} epochs ({len(result.history)} steps). "
          "Nats per image (higher is better):")
    names = list(bounds)
    print(f"{'':<24}" + "".join(f"{n:>12}" for n in names))
    for label, values in [("held-out, initial", before), ("training set", train_values),
                          ("held-out", test_values)]:
        print(f"{label:<24}" + "".join(f"{values[n]:>12.2f}" for n in names))

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"vae_{dataset.name}_{args.objective}.png"
    plot(png, plot_key, result.params, dataset, result.history,
         f"progvi VAE, {dataset.name}, {trained}; held-out ELBO {test_values['ELBO']:.1f}")
    print(f"wrote {png}")
    return {"before": before, "train": train_values, "test": test_values, "png": png,
            "history": result.history}


if __name__ == "__main__":
    main()
