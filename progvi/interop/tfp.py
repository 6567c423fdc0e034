"""TensorFlow Probability on JAX: `tfd` distributions, flows included, at `pv.sample`.

`pv.sample("z", tfd.Normal(mu, sigma))` works as it does with numpyro's Normal: progvi adapts the
distribution at the site (this module registers itself with `progvi.adev.foreign`), so every
strategy that applies to it does: `pv.reparam` when TFP marks it ``FULLY_REPARAMETERIZED``,
`pv.reinforce` and `pv.leave_one_out` always, `pv.enum` for the finite supports (Bernoulli,
Categorical, OneHotCategorical, Binomial, BetaBinomial, FiniteDiscrete), `pv.mvd` for Normal,
Bernoulli, Categorical, Poisson and Geometric.

Why the adapter traces the distribution. A sample site crosses progvi's interpreter as one
equation whose operands are the distribution's arrays. A TFP distribution keeps some of its arrays
where no pytree can see them: a `tfb.RealNVP` or `tfb.MaskedAutoregressiveFlow` holds a
shift-and-log-scale *function* that closes over the network's weights, and a
`TransformedDistribution` is not a JAX pytree at all. So the adapter traces the distribution's
sampler and log density into jaxprs when the site is reached, and makes every value those jaxprs
close over (the parameters, the weights captured by closures, whatever is traced there) an
operand of the site. The tangents of those operands are the tangents of the parameters, so
gradients reach the weights a flow's networks close over: build the flow inside the program from
the objective's parameters, the way TFP users write it.

The sampler is TFP's own (``d.sample(seed=key)`` with the site's key; a ``sample_shape`` draws
that many independent draws with split keys), and so is the log density; `pv.mvd` alone reads the
family's parameters, through the numpyro distribution of the same family.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
from numpyro.distributions import constraints

from ..adev._compat import ClosedJaxpr, hoist_consts, jaxpr_as_fun
from ..adev.errors import ProgviError
from ..adev.foreign import register_adapter

_SUBSTRATE = "tensorflow_probability.substrates.jax"
_KEY = jax.eval_shape(lambda: jax.random.key(0))


class TFPError(ProgviError, TypeError):
    """A TFP distribution progvi cannot adapt, or TFP itself is missing."""


def substrate():
    """``tensorflow_probability.substrates.jax``, or an error naming the extra to install."""
    try:
        from tensorflow_probability.substrates import jax as tfp_jax
    except ImportError as err:
        raise TFPError(
            "TensorFlow Probability on JAX is not installed, and progvi needs it for TFP "
            'distributions. Install the extra: pip install "progvi[tfp]" (it installs '
            "tfp-nightly, whose tensorflow_probability.substrates.jax needs no TensorFlow)."
        ) from err
    return tfp_jax


class _Traced(NamedTuple):
    """One method of the distribution as a jaxpr of the adapter's leaves and its arguments."""

    jaxpr: ClosedJaxpr  # inputs: the constants it closed over, then the arguments
    slots: tuple[int, ...]  # which of the adapter's leaves those constants are
    out_tree: Any  # the structure of its output


def _trace(fn: Callable, avals: tuple, leaves: list, ids: dict) -> _Traced:
    """Traces ``fn(*avals)``; what it closes over joins `leaves` (each value once, by identity)."""
    trees = []

    def flat(*args):
        out, tree = jax.tree.flatten(fn(*args))
        trees.append(tree)
        return out

    closed = jax.make_jaxpr(flat)(*avals)
    slots = []
    for const in closed.consts:
        if id(const) not in ids:
            ids[id(const)] = len(leaves)
            leaves.append(const)
        slots.append(ids[id(const)])
    return _Traced(ClosedJaxpr(hoist_consts(closed), []), tuple(slots), trees[0])


@dataclasses.dataclass(frozen=True, eq=False)
class _Spec:
    """The static part of an adapted distribution (compared by identity)."""

    name: str  # e.g. "tfd.Normal", for messages
    batch_shape: tuple[int, ...]
    event_shape: tuple[int, ...]
    dtype: Any
    reparameterized: bool  # TFP's FULLY_REPARAMETERIZED
    draw: _Traced  # key -> one draw
    log_prob: _Traced  # a point of shape batch + event -> log densities of shape batch
    finite: bool  # whether the support is finite
    support: np.ndarray | None  # its values (leading axis), when finite and known
    unknown_support: str | None  # why a finite support's values are not known
    family: _Traced | None  # () -> the numpyro distribution of the same family (for pv.mvd)


class TFPDistribution(nd.Distribution):
    """A TFP-on-JAX distribution behind numpyro's interface; create one with `pv.interop.tfp`.

    Its pytree leaves are every array the distribution's sampler and log density use, weights
    that its bijectors' functions close over included (see the module doc).
    """

    pytree_data_fields = ("leaves",)
    pytree_aux_fields = ("spec",)

    def __init__(self, spec: _Spec, leaves):
        self.spec, self.leaves = spec, tuple(leaves)
        super().__init__(spec.batch_shape, spec.event_shape)

    def _run(self, traced: _Traced, *args):
        consts = [self.leaves[i] for i in traced.slots]
        return jax.tree.unflatten(traced.out_tree, jaxpr_as_fun(traced.jaxpr)(*consts, *args))

    @property
    def display_name(self) -> str:
        return self.spec.name

    @property
    def has_rsample(self) -> bool:
        return self.spec.reparameterized

    @property
    def has_enumerate_support(self) -> bool:
        return self.spec.finite

    @property
    def support(self):
        integral = jnp.issubdtype(self.spec.dtype, jnp.integer) or self.spec.dtype == jnp.bool_
        base = constraints.integer if integral else constraints.real
        return constraints.independent(base, len(self.event_shape)) if self.event_shape else base

    def sample(self, key, sample_shape=()):
        if not jax.dtypes.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        sample_shape = tuple(sample_shape)
        if not sample_shape:
            return self._run(self.spec.draw, key)
        keys = jax.random.split(key, math.prod(sample_shape))
        draws = jax.vmap(lambda k: self._run(self.spec.draw, k))(keys)
        return draws.reshape(sample_shape + self.batch_shape + self.event_shape)

    def rsample(self, key, sample_shape=()):
        if not self.has_rsample:
            raise NotImplementedError(
                f"{self.spec.name} is not fully reparameterized in TFP, so it has no "
                "reparameterized sampler; use pv.reinforce (or pv.enum / pv.mvd) for it."
            )
        return self.sample(key, sample_shape)

    def log_prob(self, value):
        value = jnp.asarray(value)
        shape = self.batch_shape + self.event_shape
        try:
            full = jnp.broadcast_shapes(value.shape, shape)
        except ValueError:
            full = None
        lead = () if full is None else full[: len(full) - len(shape)]
        if full is None or full[len(lead):] != shape:
            raise ValueError(
                f"{self.spec.name}.log_prob: a value of shape {value.shape} does not end in the "
                f"distribution's shape {shape} (batch shape {self.batch_shape}, event shape "
                f"{self.event_shape}). Give values of shape (..., *{shape})."
            )
        value = jnp.broadcast_to(value, full).astype(self.spec.dtype)
        if not lead:
            return self._run(self.spec.log_prob, value)
        flat = value.reshape((-1, *shape))
        out = jax.vmap(lambda x: self._run(self.spec.log_prob, x))(flat)
        return out.reshape(lead + self.batch_shape)

    def enumerate_support(self, expand=True):
        if self.spec.support is None:
            raise ValueError(self.spec.unknown_support or (
                f"{self.spec.name} has no finite support to enumerate."))
        values = jnp.asarray(self.spec.support)
        size = values.shape[0]
        values = values.reshape((size,) + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = jnp.broadcast_to(values, (size,) + self.batch_shape + self.event_shape)
        return values

    def as_numpyro(self) -> nd.Distribution | None:
        """The numpyro distribution of the same family and parameters, where progvi knows one."""
        return None if self.spec.family is None else self._run(self.spec.family)

    def __repr__(self):
        return (f"<pv.interop.tfp {self.spec.name} batch_shape={self.batch_shape} "
                f"event_shape={self.event_shape}>")


def _finite_support(d, tfd, dtype, event_shape):
    """(finite, values or None, why the values are unknown) for the finite families."""
    if isinstance(d, tfd.Bernoulli):
        return True, np.array([0, 1], dtype), None
    if isinstance(d, tfd.Categorical):
        size = (d.logits if d.logits is not None else d.probs).shape[-1]
        return True, np.arange(size, dtype=dtype), None
    if isinstance(d, tfd.OneHotCategorical):
        return True, np.eye(event_shape[-1], dtype=dtype), None
    if isinstance(d, tfd.FiniteDiscrete | tfd.Binomial | tfd.BetaBinomial):
        field = "outcomes" if isinstance(d, tfd.FiniteDiscrete) else "total_count"
        # The constructor's argument: TFP converts it to an array that is traced under jit.
        outcomes = d.parameters.get(field)
        try:
            outcomes = np.asarray(outcomes)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            return True, None, (
                f"the {field} of tfd.{type(d).__name__} is traced, so its support is not known "
                f"when the program is traced; pass {field} as a Python number or a constant "
                "array to enumerate it.")
        if isinstance(d, tfd.FiniteDiscrete):
            return True, outcomes.astype(dtype).reshape(-1), None
        if outcomes.size != 1:
            return True, None, (
                f"tfd.{type(d).__name__} has several total counts {outcomes.tolist()}; "
                "enumerate one count per site.")
        return True, np.arange(int(outcomes.reshape(())) + 1).astype(dtype), None
    return False, None, None


def _family(d, tfd, batch_shape):
    """``() -> numpyro distribution`` of the same family as `d`, for the families pv.mvd covers."""

    def full(x):
        return jnp.broadcast_to(x, batch_shape)

    if isinstance(d, tfd.Normal):
        return lambda: nd.Normal(full(d.loc), full(d.scale))
    if isinstance(d, tfd.Bernoulli):
        return lambda: nd.BernoulliLogits(full(d.logits_parameter()))
    if isinstance(d, tfd.Categorical):
        return lambda: nd.CategoricalLogits(d.logits_parameter())
    if isinstance(d, tfd.Poisson):
        return lambda: nd.Poisson(full(d.rate_parameter()))
    if isinstance(d, tfd.Geometric):
        return lambda: nd.GeometricLogits(full(d.logits_parameter()))
    return None


def _adapt(d, where: str) -> TFPDistribution:
    tfd = substrate().distributions
    name = f"tfd.{type(d).__name__.lstrip('_')}"
    if not isinstance(d, tfd.Distribution):
        raise TFPError(
            f"{where}: pv.interop.tfp takes a tfd distribution "
            "(tensorflow_probability.substrates.jax.distributions), got "
            f"{type(d).__name__}."
        )
    try:
        dtype = np.dtype(d.dtype)
    except TypeError:
        raise TFPError(
            f"{where}: {name} draws a structure of values (dtype {d.dtype}), but a sample site "
            "holds one array. Sample each part at its own address "
            "(pv.sample('a', tfd.Normal(...)), pv.sample('b', ...)), or write the joint model "
            "as a @pv.gen function."
        ) from None
    try:
        batch_shape = tuple(int(s) for s in d.batch_shape)
        event_shape = tuple(int(s) for s in d.event_shape)
    except TypeError:
        raise TFPError(
            f"{where}: {name} has batch shape {d.batch_shape} and event shape {d.event_shape}, "
            "not fully known when the program is traced; give it parameters of fixed shape."
        ) from None
    leaves: list = []
    ids: dict = {}
    draw = _trace(lambda key: d.sample(seed=key), (_KEY,), leaves, ids)
    point = jax.ShapeDtypeStruct(batch_shape + event_shape, dtype)
    log_prob = _trace(d.log_prob, (point,), leaves, ids)
    finite, support, unknown = _finite_support(d, tfd, dtype, event_shape)
    family = _family(d, tfd, batch_shape)
    spec = _Spec(
        name=name, batch_shape=batch_shape, event_shape=event_shape, dtype=dtype,
        reparameterized=d.reparameterization_type == tfd.FULLY_REPARAMETERIZED,
        draw=draw, log_prob=log_prob, finite=finite, support=support, unknown_support=unknown,
        family=None if family is None else _trace(family, (), leaves, ids),
    )
    return TFPDistribution(spec, leaves)


def tfp(dist: Any) -> TFPDistribution:
    """A TFP-on-JAX distribution as a numpyro distribution that progvi's strategies accept.

    `pv.sample` calls it on every ``tfd`` distribution, so you rarely need it: call it to pass
    a TFP distribution where a numpyro one is expected outside `pv.sample` (in a NumPyro model's
    ``numpyro.sample``, where plates expand it). The result samples with TFP's sampler and scores
    with TFP's log density; its pytree leaves are every array they use, the weights that a
    bijector's shift-and-log-scale function closes over included, so gradients reach them.

    Args:
      dist: a ``tensorflow_probability.substrates.jax.distributions`` distribution, a
        ``TransformedDistribution`` (a normalizing flow) included.

    Returns:
      A `TFPDistribution` (a numpyro ``Distribution``).

    Examples:
      >>> import jax, progvi as pv
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> d = pv.interop.tfp(tfd.Normal(1.0, 2.0))
      >>> print(f"{d.log_prob(1.0):.4f}", d.has_rsample)
      -1.6121 True
      >>> @pv.expectation
      ... def second_moment(mu):
      ...     x = pv.sample("x", tfd.Normal(mu, 1.0))  # adapted at the site
      ...     return x ** 2
      >>> g = second_moment.grad(jax.random.key(0), 1.5)  # unbiased for d/dmu (mu^2 + 1) = 3
    """
    if isinstance(dist, TFPDistribution):
        return dist
    return _adapt(dist, "pv.interop.tfp")


def _foreign_backend(d, where: str):
    raise TFPError(
        f"{where}: {type(d).__name__} is a TensorFlow Probability distribution of the TensorFlow "
        "(or NumPy) backend, which JAX cannot trace. Build it from "
        "tensorflow_probability.substrates.jax.distributions (import "
        "tensorflow_probability.substrates.jax as tfp; tfd = tfp.distributions)."
    )


register_adapter(_SUBSTRATE, _adapt)
register_adapter("tensorflow_probability.python", _foreign_backend)
register_adapter("tensorflow_probability.substrates.numpy", _foreign_backend)

__all__ = ["TFPDistribution", "TFPError", "substrate", "tfp"]
