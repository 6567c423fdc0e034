"""A mixture model with a discrete latent, trained with five gradient estimators for its guide.

The model: each binarized 8x8 digit x (scikit-learn's bundled digits, no download) comes from one
of C components, c ~ Categorical(softmax(a)), x_d | c ~ Bernoulli(sigmoid(t_cd)). The guide is
q(c | x) = Categorical(softmax(x W + b)): the exact posterior has this form, so the ELBO can reach
log p(x). Both are `pv.gen` functions; the objective is `pv.elbo` (or `pv.vimco` / `pv.iwae`
with K particles) for one image, which `pv.fit` vmaps over minibatches. Only the strategy at the
guide's choice "c" changes from row to row:

* REINFORCE: the score-function estimator;
* REINFORCE + baseline: the same, minus a decaying average of past objective values
  (`pv.train.moving_average_baseline`), passed to `pv.reinforce(baseline=...)` as the program's
  argument;
* REINFORCE, IWAE-K: the K-particle bound with plain REINFORCE (for comparison with VIMCO);
* VIMCO, IWAE-K: the same bound with leave-one-out baselines (`pv.vimco`);
* enumeration: the exact sum over the C values of c (`pv.enum`);
* MVD: measure-valued derivatives of the Categorical (`pv.mvd`).

With one discrete latent everything is exact to evaluate: after training, the script prints the
held-out ELBO and log p(x) (nats per image, by enumeration), and the variance of each estimator's
minibatch gradient, measured from repeated estimates at two fixed parameter values (the
initialization, and the parameters trained by enumeration). It writes a PNG with the held-out
ELBO during training, the variances, and the components learned by each estimator.

    python examples/discrete.py            # about two minutes on two CPU cores
    python examples/discrete.py --smoke    # seconds: the test's size

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", Machine Learning 1992.
  Mnih & Rezende, "Variational Inference for Monte Carlo Objectives", ICML 2016.
  Mohamed, Rosca, Figurnov & Mnih, "Monte Carlo Gradient Estimation in Machine Learning", JMLR
  2020.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import progvi as pv


def require_extras(*modules: str) -> None:
    """Stops with the install command when an optional dependency of the examples is missing."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise SystemExit(
                f'examples/discrete.py needs {module}: pip install "progvi[examples]"'
            ) from error


# -- data -----------------------------------------------------------------------------------------


class Dataset(NamedTuple):
    train: np.ndarray  # (N, 64) int32 in {0, 1}
    test: np.ndarray  # held-out images, same layout


def load_digits(seed: int, held_out: int = 297) -> Dataset:
    """scikit-learn's 8x8 digits (grey levels 0-16), binarized at 8, split at random."""
    from sklearn.datasets import load_digits as sklearn_digits

    images = (sklearn_digits().data > 8).astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(images))
    return Dataset(images[order[held_out:]], images[order[:held_out]])


# -- the model, the guide and the objectives ------------------------------------------------------


@pv.gen
def mixture(model_params):
    c = pv.sample("c", dist.Categorical(logits=model_params["mix"]))
    pv.sample("x", dist.Bernoulli(logits=model_params["pixels"][c]).to_event(1))


@pv.gen
def encoder(guide_params, x, strategy):
    logits = x.astype(jnp.float32) @ guide_params["w"] + guide_params["b"]
    pv.sample("c", dist.Categorical(logits=logits), strategy=strategy)


def init_params(key, data: np.ndarray, components: int):
    """Component logits from random images (pulled towards 1/2), a small random guide."""
    k_pick, k_w = jax.random.split(key)
    picks = jax.random.choice(k_pick, len(data), (components,), replace=False)
    probs = 0.25 + 0.5 * jnp.asarray(data, jnp.float32)[picks]
    return {
        "model": {"mix": jnp.zeros(components), "pixels": jnp.log(probs / (1 - probs))},
        "guide": {"w": 0.01 * jax.random.normal(k_w, (data.shape[1], components)),
                  "b": jnp.zeros(components)},
    }


def elbo_program(strategy) -> pv.Expectation:
    @pv.expectation
    def objective(params, x):
        return pv.elbo(mixture, encoder, {"x": x}, model_args=(params["model"],),
                       guide_args=(params["guide"], x, strategy))

    return objective


@pv.expectation
def elbo_with_baseline(params, x, baseline):
    """The ELBO with REINFORCE whose baseline is the program's third argument."""
    return pv.elbo(mixture, encoder, {"x": x}, model_args=(params["model"],),
                   guide_args=(params["guide"], x, pv.reinforce(baseline=baseline)))


def particle_program(objective, k: int) -> pv.Expectation:
    @pv.expectation
    def program(params, x):
        return objective(mixture, encoder, {"x": x}, k, model_args=(params["model"],),
                         guide_args=(params["guide"], x, pv.reinforce))

    return program


class Estimator(NamedTuple):
    name: str
    program: pv.Expectation
    bound: str  # what the program's value estimates
    baseline: bool = False  # whether the program takes the moving-average baseline


def estimators(k: int) -> list[Estimator]:
    return [
        Estimator("REINFORCE", elbo_program(pv.reinforce), "ELBO"),
        Estimator("REINFORCE + baseline", elbo_with_baseline, "ELBO", baseline=True),
        Estimator(f"REINFORCE, IWAE-{k}", particle_program(pv.iwae, k), f"IWAE-{k}"),
        Estimator(f"VIMCO, IWAE-{k}", particle_program(pv.vimco, k), f"IWAE-{k}"),
        Estimator("enumeration", elbo_program(pv.enum), "ELBO"),
        Estimator("MVD", elbo_program(pv.mvd), "ELBO"),
    ]


# -- exact evaluation and gradient variance -------------------------------------------------------


@jax.jit
def exact_bounds(params, images):
    """Mean exact ELBO and log p(x) over `images`, summing over the C values of c."""
    model, guide = params["model"], params["guide"]
    log_lik = dist.Bernoulli(logits=model["pixels"]).log_prob(images[:, None, :]).sum(-1)
    log_joint = jax.nn.log_softmax(model["mix"]) + log_lik
    log_q = jax.nn.log_softmax(images.astype(jnp.float32) @ guide["w"] + guide["b"])
    elbo = jnp.sum(jnp.exp(log_q) * (log_joint - log_q), -1)
    return jnp.mean(elbo), jnp.mean(jax.nn.logsumexp(log_joint, -1))


def variance_meter(est: Estimator, repeats: int):
    """A function (key, params, batch, baseline) -> the total variance (sum over coordinates)
    of the minibatch gradient for the guide's parameters, from `repeats` estimates.

    A minibatch gradient is the mean of per-image gradients, one key per image: the gradient
    `pv.fit` takes at a step. All `repeats * len(batch)` per-image gradients are drawn in one
    vmap and then averaged per repeat. It is compiled once per estimator.
    """

    @jax.jit
    def measure(key, params, batch, baseline):
        extra = (baseline,) if est.baseline else ()

        def one(key, x):
            def objective(guide_params):
                both = {"model": params["model"], "guide": guide_params}
                return est.program.estimate(key, both, x, *extra)

            return jax.grad(objective)(params["guide"])

        size = len(batch)
        keys = jax.random.split(key, repeats * size)
        grads = jax.vmap(one)(keys, jnp.tile(batch, (repeats, 1)))
        minibatch = [jnp.mean(g.reshape(repeats, size, *g.shape[1:]), 1)
                     for g in jax.tree.leaves(grads)]
        return sum(jnp.sum(jnp.var(g, 0)) for g in minibatch)

    return measure


# -- the picture ----------------------------------------------------------------------------------


def plot(path, results, components_by_name, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig = plt.figure(figsize=(11, 7))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    curves, bars = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    for name in names:
        steps, values = zip(*results[name]["curve"], strict=True)
        curves.plot(steps, values, lw=1.2, label=name)
    curves.set_xscale("symlog", linthresh=max(results[names[0]]["curve"][1][0], 1))
    curves.set_xlabel("step (log scale after the first evaluation)")
    curves.set_ylabel("held-out ELBO (nats per image)")
    curves.legend(fontsize=7)
    positions = np.arange(len(names))
    for offset, (when, label) in enumerate([("init", "at initialization"),
                                            ("trained", "at trained params")]):
        variances = [results[n]["variance"][when] for n in names]
        shown = [v if v > 1e-10 else np.nan for v in variances]  # enumeration's is zero
        bars.barh(positions + 0.4 * offset, shown, height=0.4, label=label)
    bars.set_xscale("log")
    bars.set_yticks(positions + 0.2, names, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("variance of the guide's gradient (enumeration: 0)")
    bars.legend(fontsize=7)

    images = fig.add_subplot(grid[1, :])
    rows = []
    for name in names:
        pixels = jax.nn.sigmoid(components_by_name[name])  # (C, 64)
        order = np.argsort(-np.asarray(jax.nn.softmax(results[name]["mix"])))
        tiles = [np.pad(1.0 - np.asarray(pixels[c]).reshape(8, 8), 1, constant_values=1.0)
                 for c in order]
        rows.append(np.concatenate(tiles, 1))
    images.imshow(np.concatenate(rows, 0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    images.set_yticks([10 * (i + 0.5) for i in range(len(names))], names, fontsize=7)
    images.set_xticks([])
    images.set_title("learned components (pixel probabilities), most probable first", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a mixture of Bernoullis on digits with several gradient estimators.")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--k", type=int, default=5, help="particles of the IWAE / VIMCO rows")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=200,
                        help="gradient estimates per variance measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("examples/out"))
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.k < 2:
        parser.error(f"--k {args.k}: VIMCO needs at least 2 particles")
    if args.smoke:
        args.steps, args.batch_size, args.repeats = 200, 50, 50
    return args


def main(argv=None) -> dict:
    """Trains every estimator, prints the table, writes the PNG; returns the numbers for tests."""
    args = parse_args(argv)
    require_extras("sklearn", "matplotlib")
    data = load_digits(args.seed)
    if args.smoke:
        data = Dataset(data.train[:500], data.test[:200])
    train, test = jnp.asarray(data.train), jnp.asarray(data.test)
    key = jax.random.key(args.seed)
    init_key, fit_key, var_key = jax.random.split(key, 3)
    params = init_params(init_key, data.train, args.components)
    variance_batch = train[: args.batch_size]
    every = max(args.steps // 100, 1)
    initial = [float(v) for v in exact_bounds(params, test)]
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.05))

    results, trained = {}, {}
    for i, est in enumerate(estimators(args.k)):
        curve = [(0, initial[0])]

        def record(step, state, value, curve=curve):
            curve.append((step, float(exact_bounds(state.params, test)[0])))

        est.program.__name__ = est.name  # what the progress bar of its fit shows
        start = time.perf_counter()
        result = pv.fit(
            jax.random.fold_in(fit_key, i), est.program, params, optimizer,
            direction="maximize", num_steps=args.steps, data=train,
            batch_size=args.batch_size, per_datapoint=True,
            estimator=pv.train.moving_average_baseline(0.9) if est.baseline else None,
            callback=record, callback_every=every, progress=not args.no_progress,
        )
        seconds = time.perf_counter() - start
        elbo, log_px = (float(v) for v in exact_bounds(result.params, test))
        trained[est.name] = result.params
        tail = result.history[-max(len(result.history) // 10, 1):]
        results[est.name] = {"bound": est.bound, "objective": float(np.mean(tail)),
                             "elbo": elbo, "log_px": log_px, "curve": curve, "seconds": seconds,
                             "mix": result.params["model"]["mix"]}

    # Variances at two fixed parameter values shared by every row. The baseline row uses the
    # exact mean ELBO there: the value its decaying average settles to.
    reference = trained["enumeration"]
    for i, est in enumerate(estimators(args.k)):
        measure = variance_meter(est, args.repeats)
        variance = {}
        for j, (when, at) in enumerate((("init", params), ("trained", reference))):
            baseline = exact_bounds(at, variance_batch)[0]
            variance[when] = float(
                measure(jax.random.fold_in(var_key, 2 * i + j), at, variance_batch, baseline))
        results[est.name]["variance"] = variance

    print(f"\n{len(data.train)} training / {len(data.test)} held-out binarized digits; "
          f"{args.components} components; {args.steps} steps of batch {args.batch_size}.")
    print(f"Held-out ELBO and log p(x) are exact (nats per image; at initialization "
          f"{initial[0]:.2f} and {initial[1]:.2f}). Gradient variance: of {args.repeats} "
          "minibatch gradients for the guide's parameters, summed over them, at the "
          "initialization and at the parameters trained by enumeration.")
    print(f"{'estimator':<22}{'trains':>8}{'objective':>11}{'held-out':>10}{'held-out':>10}"
          f"{'grad var':>11}{'grad var':>11}{'time':>7}")
    print(f"{'':<22}{'':>8}{'(last 10%)':>11}{'ELBO':>10}{'log p(x)':>10}{'@ init':>11}"
          f"{'@ trained':>11}{'(s)':>7}")
    for name, row in results.items():
        v = row["variance"]
        print(f"{name:<22}{row['bound']:>8}{row['objective']:>11.2f}{row['elbo']:>10.2f}"
              f"{row['log_px']:>10.2f}{v['init']:>11.3g}{v['trained']:>11.3g}"
              f"{row['seconds']:>7.1f}")

    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "discrete_mixture.png"
    plot(png, results, {n: p["model"]["pixels"] for n, p in trained.items()},
         f"progvi: a mixture of {args.components} Bernoulli images, one latent choice, "
         f"six gradient estimators ({args.steps} steps)")
    print(f"wrote {png}")
    return {"initial": {"elbo": initial[0], "log_px": initial[1]}, "rows": results, "png": png}


if __name__ == "__main__":
    main()
