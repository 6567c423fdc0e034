"""Draws of the noise distribution of the noise-contrastive objectives, and their checks."""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution

from ..adev.foreign import as_distribution
from ..adev.handlers import Handler, handle, sample
from ..adev.particles import particles
from ..gen import Call, GenerativeFunction, simulate
from ..inference.objectives.errors import ObjectiveError


class _Under(Handler):
    """Puts the sites of a generative noise under ``prefix/``, as a nested call's would be."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def sample(self, site, below):
        return below(dataclasses.replace(site, address=f"{self.prefix}/{site.address}"))


def draw_noise(address: str, noise, num: int) -> tuple[jax.Array, jax.Array]:
    """`num` independent noise points and their log densities, inside an expectation program.

    `noise` is a numpyro distribution (or another library's, adapted: a TFP flow), drawn as
    one site at `address` (a point is one draw of it: its batch dimensions count as event
    dimensions, so ``Normal(zeros(2), 1)`` gives points of shape (2,) whose density is the
    product); or a generative function with one random
    choice (or a call of one, ``proposal(theta)``), simulated `num` times with its choice at
    ``address/...``: the point is that choice and its log density the trace's score.

    Returns:
      ``(ys, log_q)``: the points stacked on a leading axis of size `num`, and shape (num,).
    """
    noise = as_noise(noise)
    if isinstance(noise, Distribution):
        point = noise.to_event()
        ys = sample(address, point.expand((num,)))
        return ys, point.log_prob(ys)
    call = _as_call(noise)

    def one():
        with handle(_Under(address)):
            trace = simulate(call.gen_fn, *call.args)
        return _the_choice(call, trace.choices), trace.score

    return particles(one, num)


def noise_log_prob(noise, points: jax.Array) -> jax.Array:
    """``log q`` of each of `points` (shape (n, *event)) under the noise, shape (n,)."""
    noise = as_noise(noise)
    if isinstance(noise, Distribution):
        return noise.to_event().log_prob(points)
    call = _as_call(noise)
    # The structure of the choices (where the one choice sits), to build each point's choices.
    shapes = jax.eval_shape(lambda key: call.gen_fn.simulate(key, *call.args), jax.random.key(0))
    treedef = jax.tree.structure(shapes.choices)
    _the_choice(call, shapes.choices)

    def log_q(point):
        return call.gen_fn.assess(jax.tree.unflatten(treedef, [point]), *call.args)[0]

    return jax.vmap(log_q)(points)


def as_noise(noise):
    """`noise`, a distribution of another library (a TFP flow) adapted as at `pv.sample`."""
    return as_distribution(noise, "the noise")


def _as_call(noise) -> Call:
    if isinstance(noise, GenerativeFunction):
        return noise()
    if isinstance(noise, Call):
        return noise
    raise TypeError(
        f"noise is a {type(noise).__name__}, but it must be a numpyro distribution (e.g. "
        "noise=dist.Normal(0.0, 2.0)) or a generative function with one random choice, the "
        "noise point (a @pv.gen function, or a call of one such as proposal(theta))."
    )


def _the_choice(call: Call, choices):
    leaves = jax.tree.leaves(choices)
    if len(leaves) != 1:
        raise TypeError(
            f"noise={call.gen_fn.name} makes {len(leaves)} random choices, but a generative "
            "noise must make exactly one, the noise point, so that its density at a datapoint "
            "is known: the objectives need log q at the data as well as at the noise. Sample "
            "the point as one choice (a vector one via dist.Normal(m, s).to_event(1)), or pass "
            "a numpyro distribution."
        )
    return leaves[0]


def _where(objective: str) -> str:
    return f"pv.unnormalized.{objective}"


def check_data(objective: str, data) -> jax.Array:
    """`data` as an array with a leading datapoint axis, or an `ObjectiveError`."""
    data = jnp.asarray(data)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ObjectiveError(
            f"{_where(objective)}: data has shape {data.shape}, but it must be a batch of "
            "points with a leading datapoint axis, e.g. shape (B,) for scalars or (B, D) for "
            f"vectors. For one point x write {_where(objective)}(..., x[None])."
        )
    return data


def check_points(objective: str, data: jax.Array, ys: jax.Array) -> None:
    """Raises unless a noise point has the shape of a datapoint."""
    if jnp.shape(ys)[1:] != data.shape[1:]:
        raise ObjectiveError(
            f"{_where(objective)}: a noise point has shape {jnp.shape(ys)[1:]}, but a datapoint "
            f"has shape {data.shape[1:]} (data has shape {data.shape}). The noise must be a "
            "distribution over the data space: for data of shape (B, D) use e.g. "
            "dist.Normal(jnp.zeros(D), 1.0) or dist.MultivariateNormal(...)."
        )


def log_density_of(objective: str, name: str, fn, points: jax.Array) -> jax.Array:
    """``fn(points)``, checked to be one log density per point (shape (n,))."""
    values = jnp.asarray(fn(points))
    expected = points.shape[:1]
    if values.shape != expected:
        raise ObjectiveError(
            f"{_where(objective)}: {name} returned shape {values.shape} for points of shape "
            f"{points.shape}, but it must return one log density per point, shape {expected}. "
            f"It is called on a batch; write it vectorized, e.g. {name} = lambda x: "
            "-0.5 * jnp.sum((x - mu) ** 2, axis=-1) - log_z for points of shape (n, D)."
        )
    return values


def check_num_noise(objective: str, num_noise) -> int:
    """`num_noise` as a Python int of at least 1, or an `ObjectiveError`."""
    if isinstance(num_noise, bool) or not isinstance(num_noise, numbers.Integral) or num_noise < 1:
        raise ObjectiveError(
            f"{_where(objective)}: num_noise={num_noise!r}, but it must be a Python int of at "
            "least 1: it is the number of noise points, a shape fixed when the program is "
            f"traced. Write e.g. {_where(objective)}(..., num_noise=10)."
        )
    return int(num_noise)


def check_ratio(objective: str, noise_ratio, batch: int) -> int:
    """The number of noise points ``round(noise_ratio * batch)``, or an `ObjectiveError`."""
    valid = (
        isinstance(noise_ratio, numbers.Real)
        and not isinstance(noise_ratio, bool)
        and math.isfinite(noise_ratio)
        and noise_ratio > 0
    )
    if not valid:
        raise ObjectiveError(
            f"{_where(objective)}: noise_ratio={noise_ratio!r}, but it must be a positive Python "
            "number: the number of noise points per datapoint, fixed when the program is "
            f"traced. Write e.g. {_where(objective)}(..., noise_ratio=1.0)."
        )
    num = round(noise_ratio * batch)
    if num < 1:
        raise ObjectiveError(
            f"{_where(objective)}: noise_ratio={noise_ratio!r} with {batch} datapoints gives "
            f"round({noise_ratio!r} * {batch}) = {num} noise points; it needs at least one. "
            f"Use noise_ratio >= 1 / {batch} or a larger batch."
        )
    return num
