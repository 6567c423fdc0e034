"""NumPyro models as progvi generative functions.

A NumPyro model is a Python function that calls ``numpyro.sample`` (with ``obs=`` for observed
sites), ``numpyro.plate``, ``numpyro.param`` and ``numpyro.deterministic``. `numpyro` wraps one
so that it runs under a NumPyro messenger that answers each latent ``numpyro.sample`` the way a
`pv.gen` function's handler answers ``pv.sample``: drawn from a key, read from a choice map, or,
inside an expectation program, drawn through ``pv.sample`` and its strategies. Plates have
already broadcast a site's distribution when the messenger sees it (the messenger is outermost),
so it scores the full batch.

Choices are the latent sites, keyed by site name, and the values of ``numpyro.deterministic``
sites (recorded, never scored; a value given for one is recomputed, not read). Sites marked
``infer={"is_auxiliary": True}`` (the latent vector of NumPyro's ``AutoContinuous`` guides) are
drawn and scored but are not choices, as NumPyro does not replay them into the model. The score
is NumPyro's log joint: latent and observed sites, each scaled as ``numpyro.handlers.scale`` or a
subsampling plate asks, so that `assess` agrees with ``numpyro.infer.util.log_density``; a site
marked ``infer={"enumerate": "parallel"}`` that is not given a value is summed out exactly
(`progvi.interop._numpyro_enum`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from numpyro.distributions import TransformedDistribution, constraints
from numpyro.distributions.transforms import biject_to
from numpyro.primitives import Messenger

from ..adev.enum import enum_parallel
from ..adev.errors import AddressError, ProgviError
from ..adev.handlers import sample
from ..gen.choices import check_finite, choice_value, extra, missing, site_key
from ..gen.generative_function import GenerativeFunction
from ..gen.trace import Trace
from ._numpyro_enum import Factor, Variable, contract

MAX_DIMS = 64  # the most dimensions an array can have (numpy's limit, which jax shares)


class ModelError(ProgviError, ValueError):
    """A NumPyro model uses a feature the adapter needs more information for."""


def _enumerated(msg) -> bool:
    return (msg.get("infer") or {}).get("enumerate") == "parallel"


def _auxiliary(msg) -> bool:
    return bool((msg.get("infer") or {}).get("is_auxiliary"))


def any_value(name, fn, sample_shape, msg):
    """A latent site's value for runs that only read shapes, plates or params (one fixed key)."""
    return fn.sample(jax.random.key(0), sample_shape), False


class _NeedsNesting(Exception):
    """Raised by a run that enumerates a site before the plate nesting is known."""


class _Answer(Messenger):
    """Answers the sample, param, plate and deterministic messages of one run of a model.

    ``latent(name, fn, sample_shape, msg) -> (value, given)`` supplies the value of a latent
    site; ``given`` says whether it counts towards `generate`'s weight (observed sites always
    do); a value of None asks for the site to be enumerated (summed out).
    """

    def __init__(self, model: NumPyroModel, latent: Callable, params, check: bool,
                 nesting: int | None = None, sum_scans: bool = False):
        super().__init__()
        self.model, self.latent, self.params, self.check = model, latent, params, check
        self.nesting = nesting  # the plate dimensions to keep enumeration dims left of
        self.sum_scans = sum_scans  # whether a scan's states are summed out (assess)
        self.in_scan = False  # while a scan's body runs under `numpyro_chain`
        self.choices: dict = {}
        self.auxiliary: dict = {}
        self.deterministic: dict = {}
        self.constrained: dict = {}
        self.seen: set = set()
        self.factors: list[tuple[Factor, bool]] = []  # with whether it counts as given
        self.variables: list[Variable] = []
        self.summed: dict = {}  # the enumerated sites' values, each along its own dimension
        self.batch_ndim = 0

    def process_message(self, msg):
        if self.in_scan:
            self._in_scan(msg)
        elif msg["type"] == "param":
            msg["value"] = self._param(msg)
        elif msg["type"] == "plate":
            self._plate(msg)
        elif msg["type"] == "sample":
            self._sample(msg)
        elif msg["type"] == "deterministic":
            self._note(msg["name"], "recorded")
            self.deterministic[msg["name"]] = msg["value"]
        elif msg["type"] == "control_flow":
            self._control_flow(msg)

    def _control_flow(self, msg):
        # numpyro_chain imports this module's ModelError, so it is imported here.
        from .numpyro_chain import sum_scan

        self.in_scan = True
        try:
            where, log_marginal = sum_scan(msg, self.model.name, self.sum_scans,
                                           self.nesting if self.variables else None)
        finally:
            self.in_scan = False
        self.factors.append((Factor(where, log_marginal, None), False))

    def _in_scan(self, msg):
        from .numpyro_chain import check_unchanged

        check_unchanged(msg, self.model.name)

    def _note(self, name, verb="sampled"):
        if name in self.seen:
            raise AddressError(
                f"site {name!r} is {verb} twice in {self.model.name}. Give each "
                "numpyro.sample and numpyro.deterministic its own name."
            )
        self.seen.add(name)

    def _param(self, msg):
        name = msg["name"]
        if self.params is None:
            raise ModelError(
                f"{self.model.name} calls numpyro.param({name!r}, ...). Build it with "
                "pv.interop.numpyro(model, params=True), create the params with "
                "gf.init_params(key, *args) and pass them as its first argument."
            )
        if name not in self.params:
            raise ModelError(
                f"{self.model.name} calls numpyro.param({name!r}, ...) but the params dict (the "
                f"first argument) has no {name!r}; it has {sorted(self.params)}. Create the "
                "params with gf.init_params(key, *args), or add it."
            )
        constraint = msg["kwargs"].get("constraint", constraints.real)
        # As numpyro's SVI: the value is optimized unconstrained and mapped into the support.
        value = biject_to(constraint)(self.params[name])
        self.constrained[name] = value
        return value

    def _plate(self, msg):
        name, (size, subsample_size) = msg["name"], msg["args"][:2]
        if subsample_size is None or subsample_size == size:
            return
        indices = self.model.subsample.get(name)
        if indices is None:
            raise ModelError(
                f"plate {name!r} in {self.model.name} subsamples {subsample_size} of {size}; "
                "give the indices of the minibatch: "
                f"gf.with_subsample({{{name!r}: idx}}) with idx of shape ({subsample_size},) "
                "(with pv.fit, put jnp.arange(N) in the data so each batch carries its own)."
            )
        if jnp.shape(indices) != (subsample_size,):
            raise ModelError(
                f"plate {name!r} in {self.model.name} subsamples {subsample_size} of {size}, but "
                f"the indices given by with_subsample have shape {jnp.shape(indices)}; pass "
                f"{subsample_size} indices."
            )
        msg["value"] = jnp.asarray(indices)

    def _sample(self, msg):
        name, fn = msg["name"], msg["fn"]
        self._note(name)
        self.batch_ndim = max(self.batch_ndim, len(fn.batch_shape))
        given = True
        if msg["is_observed"]:
            value = msg["value"]
        else:
            value, given = self.latent(name, fn, tuple(msg["kwargs"].get("sample_shape", ())),
                                       msg)
            if value is None:
                value = self._enumerate(name, fn, msg)
                self.summed[name] = value
                given = False
            else:
                (self.auxiliary if _auxiliary(msg) else self.choices)[name] = value
            msg["value"] = value
        log_density = fn.log_prob(value)
        if self.check:
            check_finite(name, jnp.sum(log_density))
        self.factors.append((Factor(name, log_density, msg.get("scale")), given))

    def _enumerate(self, name, fn, msg):
        if self.nesting is None:
            raise _NeedsNesting  # NumPyroModel finds the nesting and runs the model again
        if fn.event_shape != () or not fn.has_enumerate_support:
            raise ModelError(
                f"site {name!r} in {self.model.name} is marked infer={{'enumerate': "
                "'parallel'}, but its distribution "
                f"{type(fn).__name__} (event shape {fn.event_shape}) has no finite support of "
                "scalar values to sum over. Remove the mark, or enumerate a discrete site."
            )
        dim = -self.nesting - 1 - len(self.variables)
        if -dim > MAX_DIMS:
            raise ModelError(
                f"site {name!r} in {self.model.name} is enumerated site number "
                f"{len(self.variables) + 1}: each takes an array dimension of its own, left of "
                f"the {self.nesting} plate dimensions, and arrays have at most {MAX_DIMS}. Write a "
                "long chain (a markov loop) with numpyro.contrib.control_flow.scan, which is "
                "summed out at any length, or with pv.scan."
            )
        values = fn.enumerate_support(expand=False).reshape(-1)
        # Its plates: the batch dimensions right of -nesting (those left of it are the
        # enumeration dimensions of earlier sites it depends on, as in a chain).
        shape = fn.batch_shape
        plates = frozenset(d for d in range(-min(self.nesting, len(shape)), 0) if shape[d] != 1)
        self.variables.append(Variable(name, dim, plates))
        return values.reshape((-1,) + (1,) * (-dim - 1))

    def score(self, only_given=False):
        factors = [f for f, given in self.factors if given or not only_given]
        if self.variables and not only_given:
            return contract(factors, self.variables, self.nesting, ModelError)
        total = jnp.zeros((), jnp.result_type(float))
        for f in factors:
            lp = f.log_density if f.scale is None else f.scale * f.log_density
            total = total + jnp.sum(lp)
        return total

    def recorded(self):
        return {**self.choices, **self.deterministic}


class NumPyroModel(GenerativeFunction):
    """A NumPyro model function as a generative function; create one with `pv.interop.numpyro`."""

    def __init__(self, model_fn: Callable, params: bool = False,
                 subsample: Mapping | None = None):
        if not callable(model_fn):
            raise TypeError(
                f"pv.interop.numpyro needs a model function, got {type(model_fn).__name__}."
            )
        self.model_fn, self.params = model_fn, params
        self.subsample = dict(subsample or {})

    @property
    def name(self) -> str:
        return getattr(self.model_fn, "__name__", type(self.model_fn).__name__)

    def with_subsample(self, indices: Mapping) -> NumPyroModel:
        """The same model whose subsampling plates take the given minibatch indices.

        ``numpyro.plate(name, size, subsample_size=B)`` then scales the log density of each
        site inside it by ``size / B`` (and only those sites) and subsamples the params and
        ``numpyro.subsample`` data it holds at ``indices[name]``, an integer array of shape
        ``(B,)``. The indices may be traced: build the subsampled model inside the program.

        Examples:
          >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, progvi as pv
          >>> def model(y):
          ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
          ...     with numpyro.plate("data", 100, subsample_size=2):
          ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
          >>> gf = pv.interop.numpyro(model).with_subsample({"data": jnp.array([3, 7])})
          >>> logp, _ = gf.assess({"mu": 0.0}, jnp.zeros(2))
          >>> print(f"{logp:.2f}")  # log N(0; 0, 1) + 50 * 2 log N(0; 0, 1)
          -92.81
        """
        if not isinstance(indices, Mapping):
            raise TypeError(
                f"with_subsample takes a dict from plate names to index arrays, got "
                f"{type(indices).__name__}; e.g. gf.with_subsample({{'data': idx}})."
            )
        return NumPyroModel(self.model_fn, self.params, {**self.subsample, **indices})

    def _split(self, args):
        if not self.params:
            return None, args
        if not args or not isinstance(args[0], Mapping):
            raise ModelError(
                f"{self.name} was built with params=True, so its first argument must be a "
                "dict of numpyro.param values, e.g. gf.simulate(key, params, x) with "
                "params = gf.init_params(key, x)."
            )
        return args[0], args[1:]

    def _run(self, latent, args, check=False, nesting=None, sum_scans=False):
        params, args = self._split(args)
        answer = _Answer(self, latent, params, check, nesting, sum_scans)
        with answer:
            retval = self.model_fn(*args)
        return answer, retval

    def _run_enumerated(self, latent, args, check):
        """A run whose enumerated sites are summed out, with the plate nesting found first."""
        try:
            return self._run(latent, args, check, sum_scans=True)
        except _NeedsNesting:
            pass
        probe = []

        def nesting(*args):
            probe.append(self._run(any_value, args, sum_scans=True)[0].batch_ndim)

        jax.eval_shape(nesting, *args)
        return self._run(latent, args, check, nesting=probe[0], sum_scans=True)

    def init_params(self, key: jax.Array, *args: Any) -> dict:
        """The initial values of the model's ``numpyro.param`` sites, unconstrained.

        The model runs once under ``numpyro.handlers.seed``, as numpyro's ``SVI.init`` runs a
        guide, and with the key that ``SVI(...).init(key, ...)`` gives the guide, so an
        autoguide's params start where SVI's start (init functions that draw, such as
        ``init_to_uniform``, draw the same values). Each value is mapped to the unconstrained
        space of its ``constraint=`` with numpyro's ``biject_to(constraint).inv``; that is
        what `fit` optimizes. Read the constrained values with `constrained_params`.

        Args:
          key: a `jax.random` key.
          *args: the model's arguments (without params).

        Returns:
          A dict from param names to unconstrained arrays.

        Examples:
          >>> import jax, numpyro, numpyro.distributions as dist, progvi as pv
          >>> from numpyro.distributions import TransformedDistribution, constraints
          >>> def guide():
          ...     scale = numpyro.param("scale", 2.0, constraint=constraints.positive)
          ...     numpyro.sample("mu", dist.Normal(0.0, scale))
          >>> gf = pv.interop.numpyro(guide, params=True)
          >>> params = gf.init_params(jax.random.key(0))
          >>> print(f"{params['scale']:.4f}")  # log 2
          0.6931
          >>> print(f"{gf.constrained_params(params)['scale']:.1f}")
          2.0
        """
        from numpyro import handlers

        _, _, guide_key = jax.random.split(key, 3)  # the key numpyro's SVI.init seeds a guide with
        with handlers.trace() as sites, handlers.seed(rng_seed=guide_key):
            self.model_fn(*args)
        params = {}
        for name, site in sites.items():
            if site["type"] == "param":
                constraint = site["kwargs"].get("constraint", constraints.real)
                value = biject_to(constraint).inv(site["value"])
                # Fixed dtypes (no weak types) keep a jitted step on one compilation; a param
                # may be a pytree (the network of AutoIAFNormal).
                params[name] = jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), value)
        return params

    def constrained_params(self, params: dict, *args: Any) -> dict:
        """The values of the ``numpyro.param`` sites in their constrained spaces.

        `params` are the unconstrained values that `init_params` creates and `fit` optimizes
        (``result.params`` of a `FitResult`); the model is run once to find each site's
        constraint.

        Args:
          params: the dict of unconstrained param values.
          *args: the model's other arguments.

        Returns:
          A dict from param names to constrained arrays: what numpyro's ``SVI.get_params``
          returns, to pass to ``numpyro.infer.Predictive(..., params=...)``.
        """

        answer, _ = self._run(any_value, (params, *args))
        return dict(answer.constrained)

    def _given(self, choices, enumerate_missing=False):
        if not isinstance(choices, Mapping):
            raise TypeError(
                f"the choices of {self.name} must be a dict from site names to values, got "
                f"{type(choices).__name__}."
            )

        def latent(name, fn, sample_shape, msg):
            if name not in choices:
                if enumerate_missing and _enumerated(msg):
                    return None, False
                raise missing(name, self.name)
            return choice_value(name, fn, choices[name], sample_shape), True

        return latent

    def _no_extra(self, given, answer):
        known = {**answer.recorded(), **answer.auxiliary}
        for name in given:
            if name not in known:
                raise extra(name, self.name, answer.recorded())

    def simulate(self, key, *args) -> Trace:
        def latent(name, fn, sample_shape, msg):
            return fn.sample(site_key(key, name), sample_shape), False

        answer, retval = self._run(latent, args)
        return Trace(answer.recorded(), answer.score(), retval)

    def assess(self, choices, *args):
        latent = self._given(choices, enumerate_missing=True)
        answer, retval = self._run_enumerated(latent, args, check=True)
        self._no_extra(choices, answer)
        return answer.score(), retval

    def generate(self, key, constraints, *args):
        read = self._given(constraints)

        def latent(name, fn, sample_shape, msg):
            if name in constraints:
                return read(name, fn, sample_shape, msg)
            return fn.sample(site_key(key, name), sample_shape), False

        answer, retval = self._run(latent, args, check=True)
        self._no_extra(constraints, answer)
        return Trace(answer.recorded(), answer.score(), retval), answer.score(only_given=True)

    def simulate_in_program(self, *args) -> Trace:
        def latent(name, fn, sample_shape, msg):
            if sample_shape:
                fn = fn.expand(tuple(sample_shape) + tuple(fn.batch_shape))
            if not _enumerated(msg):
                return draw_in_program(name, fn), False
            if fn.batch_shape != ():
                raise ModelError(
                    f"site {name!r} in {self.name} is marked infer={{'enumerate': "
                    f"'parallel'}} and has batch shape {fn.batch_shape} (a plate): only pv.elbo "
                    "sums a guide's plated sites out, each datapoint's on its own (the other "
                    "objectives are not sums over datapoints). Use pv.elbo with a NumPyro model, "
                    "or mark the site in the model, where it is summed out exactly."
                )
            return sample(name, fn, enum_parallel), False

        answer, retval = self._run(latent, args)
        return Trace(answer.recorded(), answer.score(), retval)

    def elbo_in_program(self, model, obs, model_args, guide_args):
        """`pv.elbo` with this guide: summed exactly over enumerated sites inside plates.

        None (the generic one-draw estimate) when the guide has no such site; otherwise the
        exact sum over them, as ``TraceEnum_ELBO`` computes it.
        """
        from ._numpyro_guide_enum import enumerated_elbo, plate_nesting

        nesting = plate_nesting(self, model, obs, model_args, guide_args)
        if nesting is None:
            return None
        return enumerated_elbo(self, model, obs, model_args, guide_args, nesting)

    def __repr__(self):
        return f"<pv.interop.numpyro {self.name}>"


def draw_in_program(name, fn):
    """A latent site's value drawn through `pv.sample` at its name, inside a program."""
    if isinstance(fn, TransformedDistribution):
        # Drawn as its base distribution at the site's address, then transformed: numpyro keeps
        # some transforms' params in their static structure (the network of AutoIAFNormal),
        # where a primitive cannot carry them, and E_eps[f(T(eps))] is the same expectation,
        # its transforms differentiated pathwise.
        value = sample(name, fn.base_dist)
        for transform in fn.transforms:
            value = transform(value)
        return value
    return sample(name, fn)


def numpyro(model_fn: Callable, params: bool = False) -> NumPyroModel:
    """A NumPyro model function as a progvi generative function.

    The choices are the model's latent sites (``numpyro.sample`` without ``obs``), keyed by
    name; observed sites add their log density to the score, as in NumPyro's log joint, and to
    `generate`'s weight. Inside an expectation program each latent site is drawn with
    ``pv.sample`` at its name (prefixed by the caller's address when the model is sampled inside
    a `pv.gen` function), so `pv.with_strategies` applies to it; a site marked
    ``infer={"enumerate": "parallel"}`` is drawn there with `pv.enum_parallel` (a scalar site),
    in `assess` and `pv.density` a marked site without a value is summed out exactly, each
    datapoint of its plate on its own, and `pv.elbo` with such a guide against a NumPyro model
    sums the guide's marked sites inside plates out the same way. NumPyro's autoguides are
    models like any other: wrap ``AutoNormal(model)`` with ``params=True`` and create its params
    with `NumPyroModel.init_params`. ``numpyro.deterministic`` values are recorded in the trace's
    choices; ``factor``, ``mask`` and ``scale`` are scored as NumPyro scores them.

    Args:
      model_fn: the model, called with the generative function's arguments.
      params: if True, the first argument of every operation is a dict giving the value of each
        ``numpyro.param`` site, so that parameters are explicit and differentiable. A site with
        ``constraint=`` takes its value unconstrained, as numpyro's SVI optimizes it, and maps it
        with ``biject_to(constraint)``; `NumPyroModel.init_params` creates the dict and
        `NumPyroModel.constrained_params` reads the constrained values back.

    Returns:
      A `NumPyroModel` generative function.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, progvi as pv
      >>> def model(y):
      ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
      ...     with numpyro.plate("data", y.shape[0]):
      ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
      >>> gf = pv.interop.numpyro(model)
      >>> tr = gf.simulate(jax.random.key(0), jnp.zeros(3))
      >>> list(tr.choices)
      ['mu']
      >>> logp, _ = gf.assess({"mu": 0.0}, jnp.zeros(3))
      >>> print(f"{logp:.4f}")  # 4 log N(0; 0, 1)
      -3.6758
    """
    return NumPyroModel(model_fn, params)


__all__ = ["ModelError", "NumPyroModel", "numpyro"]
