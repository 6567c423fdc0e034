"""Distributions of other libraries at `pv.sample`: adapters found by the library's module.

progvi's strategies speak numpyro's distribution interface (``sample(key)``, ``rsample``,
``log_prob``, ``has_rsample``, ``enumerate_support``, ``support``, batch and event shapes). A
library whose distributions speak another one registers an adapter here, under the module prefix
of its distribution classes; `as_distribution` hands every object whose class (or a base class)
comes from such a module to its adapter, which returns a numpyro distribution. `pv.sample` calls
it, so users pass the other library's distributions directly. The table is filled when
`progvi.interop` is imported (``progvi/interop/tfp.py`` registers TFP on JAX), before any program
runs; adapters import their library only when they are called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from numpyro.distributions import Distribution

# Module prefix of a library's distribution classes -> adapter(dist, where) -> numpyro dist.
ADAPTERS: dict[str, Callable[[Any, str], Distribution]] = {}


def register_adapter(module_prefix: str, adapt: Callable[[Any, str], Distribution]) -> None:
    """Makes `as_distribution` hand the distributions of `module_prefix` to `adapt`.

    `adapt(dist, where)` returns a numpyro distribution; `where` names the site (or argument)
    for its error messages. An adapter imports its library only when it is called, so that
    registering costs nothing for users without it.

    Examples:
      >>> import progvi as pv
      >>> from progvi.adev.foreign import ADAPTERS
      >>> "tensorflow_probability.substrates.jax" in ADAPTERS  # registered by progvi.interop
      True
    """
    ADAPTERS[module_prefix] = adapt


def as_distribution(obj: Any, where: str) -> Any:
    """`obj` adapted by its library's adapter if one is registered for it, else `obj` itself.

    Args:
      obj: what was passed where a distribution may stand (a numpyro distribution, a call of a
        generative function, another library's distribution, ...).
      where: the site or argument, for the adapter's errors, e.g. ``"sample site 'z'"``.

    Examples:
      >>> import numpyro.distributions as dist, progvi as pv
      >>> from progvi.adev.foreign import as_distribution
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> as_distribution(tfp.distributions.Normal(0.0, 1.0), "sample site 'x'")
      <pv.interop.tfp tfd.Normal batch_shape=() event_shape=()>
      >>> as_distribution(dist.Normal(0.0, 1.0), "sample site 'x'")  # numpyro's: itself
      <numpyro.distributions.continuous.Normal object at ...>
    """
    if isinstance(obj, Distribution) or isinstance(obj, type):
        return obj
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        for prefix, adapt in ADAPTERS.items():
            if module == prefix or module.startswith(prefix + "."):
                return adapt(obj, where)
    return obj
