"""The Pyro side of `benchmarks/air_epoch.py`: AIR in Pyro, seconds per SVI step.

The model and the guide are those of Pyro's AIR example (an LSTM guide over the image and the
previous latents, `F.affine_grid` / `F.grid_sample` as the spatial transformer, masked where and
what of absent objects) at the sizes of `examples/air.py`: decoder 50-200-400 on a 20x20 window,
encoder 400-200-100, LSTM with 256 units, presence choices whose count has a truncated geometric
prior (after an absent object the guide draws presence from the prior, as in the progvi model).
It runs in the environment of `make_env.sh` (torch + pyro-ppl), as a subprocess of the
benchmark, and prints one JSON line per estimator:

    benchmarks/baselines/.venv/bin/python benchmarks/baselines/pyro_air.py \\
        --data scenes.npy --estimators reinforce,enum,iwae-reinforce --steps 20

Estimators: reinforce (`TraceGraph_ELBO`), enum (`TraceEnum_ELBO`, the guide's presence
choices enumerated sequentially), iwae-reinforce (`RenyiELBO(alpha=0)`, the IWAE bound, with K
particles). Pyro has no measure-valued derivatives.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, RenyiELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.optim import Adam
from torch import nn

WINDOW, WHAT, HIDDEN = 20, 50, 256
WHERE_LOC, WHERE_SCALE, PIXEL_STD = (3.0, 0.0, 0.0), (0.2, 1.0, 1.0), 0.3


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(WHAT, 200), nn.Linear(200, WINDOW * WINDOW)

    def forward(self, what):
        return torch.sigmoid(self.out(F.leaky_relu(self.hidden(what))) - 2.0)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(WINDOW * WINDOW, 200), nn.Linear(200, 2 * WHAT)

    def forward(self, window):
        out = self.out(F.leaky_relu(self.hidden(window)))
        return out[:, :WHAT], F.softplus(out[:, WHAT:]) + 1e-4


def _theta(where):
    # (s, x, y) -> the 2x3 affine map from output coordinates to input coordinates.
    s, x, y = where[:, 0], where[:, 1], where[:, 2]
    zero = torch.zeros_like(s)
    return torch.stack([torch.stack([s, zero, x], 1), torch.stack([zero, s, y], 1)], 1)


def window_to_image(where, windows, side):
    n = windows.shape[0]
    grid = F.affine_grid(_theta(where), (n, 1, side, side), align_corners=True)
    return F.grid_sample(windows.view(n, 1, WINDOW, WINDOW), grid,
                         align_corners=True).view(n, side, side)


def image_to_window(where, images, side):
    n = images.shape[0]
    s = where[:, :1]
    inverse = torch.cat([1.0 / s, -where[:, 1:] / s], 1)
    grid = F.affine_grid(_theta(inverse), (n, 1, WINDOW, WINDOW), align_corners=True)
    return F.grid_sample(images.view(n, 1, side, side), grid,
                         align_corners=True).view(n, WINDOW * WINDOW)


class Air(nn.Module):
    def __init__(self, side, steps, pres_prior, exponents, enumerate):
        super().__init__()
        self.side, self.steps, self.enumerate = side, steps, enumerate
        # As examples/air.py: object t follows object t - 1 with probability rho ** exponent_t.
        self.rhos = [pres_prior ** exponents[min(t, len(exponents) - 1)] for t in range(steps)]
        self.decoder, self.encoder = Decoder(), Encoder()
        self.lstm = nn.LSTMCell(side * side + 3 + WHAT + 1, HIDDEN)
        self.predict = nn.Linear(HIDDEN, 7)
        self.register_buffer("where_loc", torch.tensor(WHERE_LOC))
        self.register_buffer("where_scale", torch.tensor(WHERE_SCALE))

    def model(self, batch):
        pyro.module("decoder", self.decoder)
        n = batch.shape[0]
        with pyro.plate("data", n):
            canvas = torch.zeros(n, self.side, self.side)
            present = torch.ones(n)
            for t in range(self.steps):
                z = pyro.sample(f"pres_{t}", dist.Bernoulli(self.rhos[t] * torch.ones(n)))
                present = present * z
                on = present > 0
                where = pyro.sample(f"where_{t}", dist.Normal(
                    self.where_loc.expand(n, 3), self.where_scale.expand(n, 3))
                    .to_event(1).mask(on))
                what = pyro.sample(f"what_{t}", dist.Normal(
                    torch.zeros(n, WHAT), torch.ones(n, WHAT)).to_event(1).mask(on))
                canvas = canvas + present.view(-1, 1, 1) * window_to_image(
                    where, self.decoder(what), self.side)
            pyro.sample("x", dist.Normal(canvas.view(n, -1), PIXEL_STD).to_event(1),
                        obs=batch.view(n, -1))

    def guide(self, batch):
        for name in ("lstm", "predict", "encoder"):
            pyro.module(name, getattr(self, name))
        n = batch.shape[0]
        flat = batch.view(n, -1)
        infer = {"enumerate": "sequential"} if self.enumerate else {}
        with pyro.plate("data", n):
            h, c = torch.zeros(n, HIDDEN), torch.zeros(n, HIDDEN)
            where, what, present = torch.zeros(n, 3), torch.zeros(n, WHAT), torch.ones(n)
            for t in range(self.steps):
                h, c = self.lstm(torch.cat([flat, where, what, present[:, None]], 1), (h, c))
                out = self.predict(h)
                prior_logit = math.log(self.rhos[t]) - math.log1p(-self.rhos[t])
                logit = present * out[:, 0] + (1 - present) * prior_logit
                z = pyro.sample(f"pres_{t}", dist.Bernoulli(logits=logit), infer=infer)
                present = present * z
                on = present > 0
                where = pyro.sample(f"where_{t}", dist.Normal(
                    self.where_loc + out[:, 1:4], F.softplus(out[:, 4:7] - 2.0) + 1e-4)
                    .to_event(1).mask(on))
                loc, scale = self.encoder(image_to_window(where, batch, self.side))
                what = pyro.sample(f"what_{t}", dist.Normal(loc, scale).to_event(1).mask(on))


def loss_for(name, k):
    if name == "reinforce":
        return TraceGraph_ELBO()
    if name == "enum":
        return TraceEnum_ELBO(max_plate_nesting=1)
    if name == "iwae-reinforce":
        return RenyiELBO(alpha=0.0, num_particles=k)
    raise ValueError(f"the Pyro side has no estimator {name!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a .npy of (N, side, side) float32 scenes")
    parser.add_argument("--estimators", default="reinforce,enum,iwae-reinforce")
    parser.add_argument("--steps", type=int, default=20, help="timed SVI steps per estimator")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-objects", type=int, default=2)
    parser.add_argument("--pres-prior", type=float, default=0.05)
    parser.add_argument("--pres-exponents", default="1,2.3,5",
                        help="object t's prior is pres-prior ** exponent t (comma-separated)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = torch.from_numpy(np.load(args.data))
    side = data.shape[1]
    pyro.enable_validation(False)
    for name in args.estimators.split(","):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        exponents = [float(e) for e in args.pres_exponents.split(",")]
        air = Air(side, args.max_objects + 1, args.pres_prior, exponents, enumerate=name == "enum")
        svi = SVI(air.model, air.guide, Adam({"lr": args.lr}), loss=loss_for(name, args.k))
        order = torch.randperm(len(data))
        batches = [data[order[(i * args.batch_size) % len(data):][: args.batch_size]]
                   for i in range(args.warmup + args.steps)]
        for batch in batches[: args.warmup]:
            svi.step(batch)
        start = time.perf_counter()
        losses = [svi.step(batch) for batch in batches[args.warmup:]]
        seconds = (time.perf_counter() - start) / args.steps
        print(json.dumps({"estimator": name, "seconds_per_step": seconds,
                          "finite": bool(np.all(np.isfinite(losses))),
                          "torch": torch.__version__, "pyro": pyro.__version__,
                          "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
