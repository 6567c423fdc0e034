"""NumPyro models as progvi generative functions.

A NumPyro model is a Python function that calls ``numpyro.sample`` (with ``obs=`` for observed
sites), ``numpyro.plate`` and ``numpyro.param``. `numpyro` wraps one so that it runs under a
NumPyro messenger that answers each latent ``numpyro.sample`` the way a `pv.gen` function's
handler answers ``pv.sample``: drawn from a key, read from a choice map, or, inside an
expectation program, drawn through ``pv.sample`` and its strategies. Plates have already
broadcast a site's distribution when the messenger sees it (the messenger is outermost), so it
scores the full batch.

Choices are the latent sites, keyed by site name. The score is NumPyro's log joint: latent and
observed sites, each scaled as ``numpyro.handlers.scale`` or a subsampling plate asks, so that
`assess` agrees with ``numpyro.infer.util.log_density``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
from numpyro.primitives import Messenger

from ..adev.errors import AddressError, ProgviError
from ..adev.handlers import sample
from ..gen.choices import check_finite, choice_value, extra, missing, site_key
from ..gen.generative_function import GenerativeFunction
from ..gen.handlers import add
from ..gen.trace import Trace


class ModelError(ProgviError, ValueError):
    """A NumPyro model uses a feature the adapter needs more information for."""


class _Answer(Messenger):
    """Answers the sample and param messages of one run of a NumPyro model.

    ``latent(name, fn, sample_shape) -> (value, given)`` supplies the value of a latent site;
    ``given`` says whether it counts towards `generate`'s weight (observed sites always do).
    """

    def __init__(self, model_name: str, latent: Callable, params, check: bool):
        super().__init__()
        self.model_name, self.latent, self.params, self.check = model_name, latent, params, check
        self.choices: dict = {}
        self.seen: set = set()
        self.score = self.weight = None

    def process_message(self, msg):
        if msg["type"] == "param":
            msg["value"] = self._param(msg["name"])
        elif msg["type"] == "plate":
            size, subsample_size = msg["args"][:2]
            if subsample_size is not None and subsample_size != size:
                raise ModelError(
                    f"plate {msg['name']!r} in {self.model_name} subsamples {subsample_size} of "
                    f"{size}, which needs a random key the adapter does not draw. Pass the "
                    "minibatch as an argument and scale its sites with "
                    "numpyro.handlers.scale(scale=size / batch_size)."
                )
        elif msg["type"] == "sample":
            self._sample(msg)

    def _param(self, name):
        if self.params is None:
            raise ModelError(
                f"{self.model_name} calls numpyro.param({name!r}, ...). Build it with "
                "pv.interop.numpyro(model, params=True) and pass a dict of parameter values "
                f"({{{name!r}: value, ...}}) as its first argument."
            )
        if name not in self.params:
            raise ModelError(
                f"{self.model_name} calls numpyro.param({name!r}, ...) but the params dict (the "
                f"first argument) has no {name!r}; it has {sorted(self.params)}. Add it."
            )
        return self.params[name]

    def _sample(self, msg):
        name, fn = msg["name"], msg["fn"]
        if name in self.seen:
            raise AddressError(
                f"site {name!r} is sampled twice in {self.model_name}. Give each numpyro.sample "
                "its own name."
            )
        self.seen.add(name)
        if msg["is_observed"]:
            value, given = msg["value"], True
        else:
            value, given = self.latent(name, fn, tuple(msg["kwargs"].get("sample_shape", ())))
            msg["value"] = value
            self.choices[name] = value
        log_density = fn.log_prob(value)
        if msg.get("scale") is not None:
            log_density = msg["scale"] * log_density
        log_density = jnp.sum(log_density)
        if self.check:
            check_finite(name, log_density)
        self.score = add(self.score, log_density)
        if given:
            self.weight = add(self.weight, log_density)


def _total(value):
    return jnp.zeros((), jnp.result_type(float)) if value is None else value


class NumPyroModel(GenerativeFunction):
    """A NumPyro model function as a generative function; create one with `pv.interop.numpyro`."""

    def __init__(self, model_fn: Callable, params: bool = False):
        if not callable(model_fn):
            raise TypeError(
                f"pv.interop.numpyro needs a model function, got {type(model_fn).__name__}."
            )
        self.model_fn, self.params = model_fn, params

    @property
    def name(self) -> str:
        return getattr(self.model_fn, "__name__", type(self.model_fn).__name__)

    def _run(self, latent, args, check=False):
        params = None
        if self.params:
            if not args or not isinstance(args[0], Mapping):
                raise ModelError(
                    f"{self.name} was built with params=True, so its first argument must be a "
                    "dict of numpyro.param values, e.g. gf.simulate(key, {'w': w}, x)."
                )
            params, args = args[0], args[1:]
        answer = _Answer(self.name, latent, params, check)
        with answer:
            retval = self.model_fn(*args)
        return answer, retval

    def _given(self, choices):
        if not isinstance(choices, Mapping):
            raise TypeError(
                f"the choices of {self.name} must be a dict from site names to values, got "
                f"{type(choices).__name__}."
            )

        def latent(name, fn, sample_shape):
            if name not in choices:
                raise missing(name, self.name)
            return choice_value(name, fn, choices[name], sample_shape), True

        return latent

    def _no_extra(self, given, answer):
        for name in given:
            if name not in answer.choices:
                raise extra(name, self.name, answer.choices)

    def simulate(self, key, *args) -> Trace:
        def latent(name, fn, sample_shape):
            return fn.sample(site_key(key, name), sample_shape), False

        answer, retval = self._run(latent, args)
        return Trace(answer.choices, _total(answer.score), retval)

    def assess(self, choices, *args):
        answer, retval = self._run(self._given(choices), args, check=True)
        self._no_extra(choices, answer)
        return _total(answer.score), retval

    def generate(self, key, constraints, *args):
        read = self._given(constraints)

        def latent(name, fn, sample_shape):
            if name in constraints:
                return read(name, fn, sample_shape)
            return fn.sample(site_key(key, name), sample_shape), False

        answer, retval = self._run(latent, args, check=True)
        self._no_extra(constraints, answer)
        return Trace(answer.choices, _total(answer.score), retval), _total(answer.weight)

    def simulate_in_program(self, *args) -> Trace:
        def latent(name, fn, sample_shape):
            if sample_shape:
                fn = fn.expand(tuple(sample_shape) + tuple(fn.batch_shape))
            return sample(name, fn), False

        answer, retval = self._run(latent, args)
        return Trace(answer.choices, _total(answer.score), retval)

    def __repr__(self):
        return f"<pv.interop.numpyro {self.name}>"


def numpyro(model_fn: Callable, params: bool = False) -> NumPyroModel:
    """A NumPyro model function as a progvi generative function.

    The choices are the model's latent sites (``numpyro.sample`` without ``obs``), keyed by
    name; observed sites add their log density to the score, as in NumPyro's log joint, and to
    `generate`'s weight. Inside an expectation program each latent site is drawn with
    ``pv.sample`` at its name (prefixed by the caller's address when the model is sampled inside
    a `pv.gen` function), so `pv.with_strategies` applies to it.

    Args:
      model_fn: the model, called with the generative function's arguments.
      params: if True, the first argument of every operation is a dict giving the value of each
        ``numpyro.param`` site (used as given, in constrained space), so that parameters are
        explicit and differentiable.

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
