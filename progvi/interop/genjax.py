"""genjax generative functions as progvi generative functions.

A genjax 1.0.14 ``@genjax.gen`` function is a Python function whose addressed calls
(``genjax.normal(m, 1.0) @ "z"``) are answered by the handler on top of genjax's handler stack;
nothing is traced to a jaxpr until a transformation asks. `genjax` wraps one in a `pv.gen`
function whose body runs the genjax body under a handler that turns each addressed call into a
``pv.sample`` at the same address: a genjax distribution becomes the numpyro distribution with the
same density (and its ADEV estimator, if it names one, the site's strategy), a nested genjax
function becomes a nested call, and genjax's ``Vmap`` / ``Scan`` of one become `pv.vmap` /
`pv.scan`. So simulate / assess / generate, and inside expectation programs
every draw, go through progvi's own handlers and strategies, and `pv.with_strategies` reaches
every choice.

Choice maps have the same shape in both libraries (nested dicts keyed by address); the
differences are the dtypes of discrete values (``genjax.flip`` draws booleans and TFP's counting
distributions floats, where numpyro's distributions, hence progvi's choices, hold integers) and
the sign of a trace's score (genjax stores ``-log p``, progvi ``log p``). `choices_from_genjax`,
`choices_to_genjax` and `trace_from_genjax` convert.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..adev.handlers import sample
from ..gen.choices import extra
from ..gen.errors import ChoiceError
from ..gen.function import GenFunction
from ..gen.generative_function import GenerativeFunction
from ..gen.trace import Trace
from ._genjax_distributions import GenJAXError, convert


def _genjax():
    try:
        import genjax
    except ImportError as err:
        raise ImportError(
            "pv.interop.genjax needs genjax, which is not installed. Install it with "
            'pip install "progvi[genjax]" (genjax 1.0.14, Python 3.12).'
        ) from err
    return genjax


def _unsupported(construct: str, where: str, fix: str) -> GenJAXError:
    return GenJAXError(f"{where} is a genjax {construct}, which progvi cannot reinterpret: "
                       f"{fix}")


def _adapt(gen_fn, where: str) -> GenerativeFunction:
    """The progvi generative function for a genjax one: a `GenJAXFunction` for ``@genjax.gen``,
    `pv.vmap` / `pv.scan` of the adapted callee for genjax's ``Vmap`` / ``Scan``.

    genjax's ``Vmap`` and ``Scan`` have the semantics of progvi's combinators: choices batched
    (stacked) along axis 0, ``Scan``'s callee ``(carry, x) -> (carry, y)`` run over ``(init, xs)``.
    """
    from ..gen.scan import scan
    from ..gen.vmap import vmap

    genjax = _genjax()
    if isinstance(gen_fn, genjax.Fn):
        return GenJAXFunction(gen_fn)
    kind = type(gen_fn).__name__
    if isinstance(gen_fn, genjax.Vmap):
        in_axes, axis_size = gen_fn.in_axes.value, gen_fn.axis_size.value
        if axis_size is not None and in_axes is None:
            raise _unsupported(
                "Vmap with axis_size and no mapped argument (gen_fn.repeat(n))", where,
                "pv.vmap needs a mapped argument; pass jnp.arange(n) (or per-datapoint data) "
                "and map over it, e.g. body.vmap(in_axes=(0, ...)).")
        if isinstance(in_axes, list):
            in_axes = tuple(in_axes)
        return vmap(_callee(gen_fn.gen_fn, kind, where), in_axes=in_axes)
    if isinstance(gen_fn, genjax.Scan):
        return scan(_callee(gen_fn.callee, kind, where), length=gen_fn.length.value)
    if isinstance(gen_fn, genjax.Distribution):
        raise _unsupported("Distribution", where,
                           "sample it inside a @genjax.gen function, or use the numpyro "
                           "distribution with pv.sample.")
    fixes = {"Cond": "sample in both branches and select the value with jnp.where."}
    raise _unsupported(kind, where, fixes.get(
        kind, "progvi reinterprets @genjax.gen functions, Vmap and Scan of them, and genjax's "
        "built-in distributions."))


def _callee(gen_fn, kind: str, where: str) -> GenerativeFunction:
    if isinstance(gen_fn, _genjax().Distribution):
        raise _unsupported(
            f"{kind} of a distribution", where,
            f"wrap the distribution in a @genjax.gen function (one addressed call) and {kind} "
            "that, or sample one distribution with batched parameters.")
    return _adapt(gen_fn, where)


class _Forward:
    """Answers the addressed calls of one run of a genjax body with `pv.sample` at the address.

    Installed on genjax's handler stack for the run (genjax keeps one stack per process and reads
    its top); the `pv.sample` calls go to the progvi handler of the enclosing `pv.gen` run.
    """

    def __init__(self, gen_name: str):
        self.gen_name = gen_name

    def __call__(self, address, gen_fn, args, kwargs=None):
        genjax = _genjax()
        kwargs = kwargs or {}
        where = f"the call at {address!r} in {self.gen_name}"
        if isinstance(gen_fn, genjax.Distribution):
            converted = convert(gen_fn, tuple(args), kwargs, where)
            value = sample(address, converted.dist, strategy=converted.strategy)
            return converted.to_genjax(value)
        if kwargs:
            raise GenJAXError(
                f"{where} passes keyword arguments {sorted(kwargs)} to the genjax function "
                f"{_name(gen_fn)}; progvi's generative functions take positional arguments. "
                "Pass them by position."
            )
        return sample(address, _adapt(gen_fn, where)(*args))


def _name(gen_fn) -> str:
    # genjax's @gen cannot set __name__ on its frozen Fn; the body's name is the function's.
    source = getattr(getattr(gen_fn, "source", None), "value", None)
    return getattr(source, "__name__", None) or type(gen_fn).__name__


class GenJAXFunction(GenerativeFunction):
    """A ``@genjax.gen`` function as a progvi generative function; create one with
    `pv.interop.genjax`.

    Its choices are the genjax function's addressed calls, in a nested dict keyed by address,
    exactly as in a `pv.gen` function; its score is ``log p`` of the choices.
    """

    def __init__(self, gen_fn):
        genjax = _genjax()
        if not isinstance(gen_fn, genjax.Fn):
            raise TypeError(f"GenJAXFunction wraps a @genjax.gen function, got "
                            f"{type(gen_fn).__name__}; use pv.interop.genjax.")
        self.gen_fn = gen_fn
        source = gen_fn.source.value
        name = _name(gen_fn)

        @functools.wraps(source)  # the signature, for progvi's arity check
        def body(*args):
            stack = genjax.core.handler_stack
            stack.append(_Forward(name))
            try:
                return source(*args)
            finally:
                stack.pop()

        self.body = GenFunction(body)

    @property
    def name(self) -> str:
        return _name(self.gen_fn)

    def simulate(self, key, *args) -> Trace:
        return self.body.simulate(key, *args)

    def assess(self, choices, *args):
        return self.body.assess(choices, *args)

    def generate(self, key, constraints, *args):
        return self.body.generate(key, constraints, *args)

    def simulate_in_program(self, *args) -> Trace:
        return self.body.simulate_in_program(*args)

    def density_in_program(self, choices, *args):
        return self.body.density_in_program(choices, *args)

    def __repr__(self):
        return f"<pv.interop.genjax {self.name}>"


def genjax(gen_fn: Any) -> GenerativeFunction:
    """A genjax generative function (``@genjax.gen``) as a progvi generative function.

    Usable as the model or the guide of any progvi objective, and nested in `pv.gen` functions.
    Each addressed call of a genjax distribution is a choice at the same address, drawn inside
    expectation programs through ``pv.sample`` and its strategy: the one genjax's ADEV form of
    the distribution names (``normal_reparam`` -> `pv.reparam`, ``flip_reinforce`` ->
    `pv.reinforce`, ``flip_enum`` -> `pv.enum`, ``flip_mvd`` -> `pv.mvd`), otherwise progvi's
    default (reparameterized where the distribution has it, REINFORCE otherwise); in every case
    `pv.with_strategies` overrides it. A nested genjax function's choices are a nested dict.

    genjax's ``Vmap`` and ``Scan`` of ``@genjax.gen`` functions (at the top or addressed in a
    body) become `pv.vmap` and `pv.scan` of the adapted callee, which have the same semantics.
    ``Cond``, ``Vmap`` / ``Scan`` of a bare distribution, ``repeat`` and distributions made with
    ``genjax.core.distribution`` / ``genjax.tfp_distribution`` are not reinterpreted: each is a
    `GenJAXError` naming its address and the progvi construct to use instead.

    Args:
      gen_fn: a ``@genjax.gen`` function (or a genjax ``Vmap`` / ``Scan`` of one), called with
        positional arguments.

    Returns:
      A `GenJAXFunction` (a `pv.vmap` / `pv.scan` for a combinator). Its choices hold discrete
      values as integers (convert with `choices_from_genjax` / `choices_to_genjax`), and its
      score is ``log p``, not genjax's ``-log p``.

    Examples:
      >>> import jax, genjax, progvi as pv
      >>> @genjax.gen
      ... def model(m):
      ...     z = genjax.normal(m, 1.0) @ "z"
      ...     return genjax.normal(z, 0.5) @ "x"
      >>> gf = pv.interop.genjax(model)
      >>> sorted(gf.simulate(jax.random.key(0), 0.0).choices)
      ['x', 'z']
      >>> logp, _ = gf.assess({"z": 0.0, "x": 0.0}, 0.0)
      >>> print(f"{logp:.4f}")  # log N(0; 0, 1) + log N(0; 0, 0.5)
      -1.1447
    """
    genjax_module = _genjax()
    if not isinstance(gen_fn, genjax_module.GFI):
        raise TypeError(f"pv.interop.genjax needs a @genjax.gen function, got "
                        f"{type(gen_fn).__name__}.")
    return _adapt(gen_fn, f"pv.interop.genjax({_name(gen_fn)})")


def _shapes(args):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), args)


def _genjax_dtypes(gen_fn, args):
    """The choices genjax draws from `gen_fn` at `args`, as shapes and dtypes (nothing runs)."""
    genjax = _genjax()
    trace = jax.eval_shape(lambda a: genjax.seed(gen_fn.simulate)(jax.random.key(0), *a),
                           _shapes(args))
    return genjax.get_choices(trace)


def _progvi_dtypes(gen_fn, args):
    """The choices progvi draws from `gen_fn` at `args`, as shapes and dtypes."""
    adapted = _adapt(gen_fn, f"the choices of {_name(gen_fn)}")
    trace = jax.eval_shape(lambda a: adapted.simulate(jax.random.key(0), *a), _shapes(args))
    return trace.choices


def _unwrap(gen_fn):
    return gen_fn.gen_fn if isinstance(gen_fn, GenJAXFunction) else gen_fn


def choices_from_genjax(gen_fn: Any, choices: Any, *args: Any) -> dict:
    """A genjax choice map of `gen_fn` (at `args`) as a progvi choice map.

    Each value takes the dtype progvi draws at its address: ``genjax.flip``'s booleans and the
    floats that TFP's counting distributions (Poisson, binomial, ...) draw become integers, as
    numpyro's distributions draw them. The nesting is kept; `choices` may be partial
    (constraints for ``generate``).

    Args:
      gen_fn: the ``@genjax.gen`` function (or its `pv.interop.genjax` wrapper).
      choices: a genjax choice map (nested dicts), or a genjax trace.
      *args: the arguments of `gen_fn`, which fix its addresses.

    Returns:
      A nested dict from addresses to arrays.

    Examples:
      >>> import jax, genjax, progvi as pv
      >>> @genjax.gen
      ... def coin(p):
      ...     return genjax.flip(p) @ "heads"
      >>> tr = genjax.seed(coin.simulate)(jax.random.key(0), 0.5)
      >>> pv.interop.choices_from_genjax(coin, tr, 0.5)["heads"].dtype
      dtype('int32')
    """
    gen_fn = _unwrap(gen_fn)
    choices = _genjax().get_choices(choices)
    return _cast_like(choices, _progvi_dtypes(gen_fn, args), _name(gen_fn), "")


def choices_to_genjax(gen_fn: Any, choices: Mapping, *args: Any) -> dict:
    """A progvi choice map of `gen_fn` (at `args`) as a genjax choice map.

    Each value takes the dtype genjax draws at its address (a ``genjax.flip`` value becomes a
    boolean); `choices` may be partial (constraints for ``generate``).

    Args:
      gen_fn: the ``@genjax.gen`` function (or its `pv.interop.genjax` wrapper).
      choices: a nested dict from addresses to values.
      *args: the arguments of `gen_fn`, which fix its addresses.

    Returns:
      A nested dict that genjax's ``assess`` / ``generate`` accept.

    Examples:
      >>> import jax.numpy as jnp, genjax, progvi as pv
      >>> @genjax.gen
      ... def coin(p):
      ...     return genjax.flip(p) @ "heads"
      >>> x = pv.interop.choices_to_genjax(coin, {"heads": jnp.array(1)}, 0.5)
      >>> x["heads"].dtype, bool(x["heads"])
      (dtype('bool'), True)
      >>> logp, _ = coin.assess(x, 0.5)
      >>> print(f"{logp:.4f}")
      -0.6931
    """
    gen_fn = _unwrap(gen_fn)
    return _cast_like(choices, _genjax_dtypes(gen_fn, args), _name(gen_fn), "")


def _cast_like(choices, reference, gen_name, prefix):
    if not isinstance(choices, Mapping):
        if isinstance(reference, Mapping):
            raise ChoiceError(
                lambda a: f"the value given at {a!r} is one array, but {gen_name} calls a "
                "generative function there, whose choices are a dict. Give a dict of its "
                "choices.",
                prefix.rstrip("/"),
            )
        return jnp.asarray(choices, reference.dtype)
    if not isinstance(reference, Mapping):
        raise ChoiceError(
            lambda a: f"the value given at {a!r} is a dict, but {gen_name} samples one "
            "distribution there. Give the array itself.",
            prefix.rstrip("/"),
        )
    out = {}
    for name, value in choices.items():
        if name not in reference:
            raise extra(f"{prefix}{name}", gen_name, reference)
        out[name] = _cast_like(value, reference[name], gen_name, f"{prefix}{name}/")
    return out


def trace_from_genjax(trace) -> Trace:
    """A genjax trace as a progvi `Trace`: its choices converted by `choices_from_genjax`, its
    score ``log p`` (genjax stores ``-log p``), the same return value.

    Examples:
      >>> import jax, genjax, progvi as pv
      >>> @genjax.gen
      ... def model():
      ...     return genjax.normal(0.0, 1.0) @ "z"
      >>> tr = pv.interop.trace_from_genjax(genjax.seed(model.simulate)(jax.random.key(0)))
      >>> logp, _ = pv.interop.genjax(model).assess(tr.choices)
      >>> bool(abs(tr.score - logp) < 1e-5)
      True
    """
    args, kwargs = trace.get_args()
    if kwargs:
        raise GenJAXError(
            f"the genjax trace was made with keyword arguments {sorted(kwargs)}; progvi's "
            "generative functions take positional arguments. Simulate it with positional ones."
        )
    choices = choices_from_genjax(trace.get_gen_fn(), trace, *args)
    return Trace(choices, -trace.get_score(), trace.get_retval())
