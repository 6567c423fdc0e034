"""Posterior samples from a fitted guide, for numpyro's `Predictive` and for ArviZ.

A guide's choices are drawn with `simulate` under `jax.vmap`, one key per draw; the result is a
dict from site names to arrays with a leading sample axis, which is the form
``numpyro.infer.Predictive(model, posterior_samples=...)`` takes, and which `to_arviz` reshapes
into chains and draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from ..gen.choices import paths
from ..gen.generative_function import GenerativeFunction


def posterior_samples(key: jax.Array, guide: GenerativeFunction, *args: Any,
                      num_samples: int = 1000) -> dict:
    """Draws `num_samples` sets of choices from a guide: a dict for `Predictive`.

    Args:
      key: a `jax.random` key.
      guide: a generative function, e.g. ``pv.interop.numpyro(AutoNormal(model), params=True)``.
      *args: the guide's arguments (for a NumPyro guide with params, the fitted params first:
        ``result.params``).
      num_samples: the number of draws.

    Returns:
      A dict from addresses (``"enc/z"`` for nested choices) to arrays of shape
      ``(num_samples, *site_shape)``; a NumPyro guide's ``numpyro.deterministic`` values are
      included.

    Examples:
      >>> import jax, numpyro, numpyro.distributions as dist, progvi as pv
      >>> from numpyro.infer import Predictive
      >>> def model():
      ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
      ...     numpyro.sample("y", dist.Normal(mu, 1.0))
      >>> def guide(params):
      ...     numpyro.sample("mu", dist.Normal(params["m"], 0.5))
      >>> samples = pv.interop.posterior_samples(
      ...     jax.random.key(0), pv.interop.numpyro(guide), {"m": 2.0}, num_samples=500)
      >>> samples["mu"].shape
      (500,)
      >>> predictions = Predictive(model, posterior_samples=samples)(jax.random.key(1))
      >>> predictions["y"].shape
      (500,)
    """
    if not isinstance(guide, GenerativeFunction):
        raise TypeError(
            f"posterior_samples: guide is a {type(guide).__name__}, not a generative function. "
            "Wrap a NumPyro guide first: pv.interop.numpyro(guide, params=True)."
        )
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"posterior_samples: num_samples={num_samples!r} must be a positive int.")
    keys = jax.random.split(key, num_samples)
    choices = jax.jit(jax.vmap(lambda k: guide.simulate(k, *args).choices))(keys)
    return dict(paths(choices))


def to_arviz(samples: Mapping, *, num_chains: int = 1, observed_data: Mapping | None = None,
             posterior_predictive: Mapping | None = None) -> Any:
    """Posterior samples as ArviZ data (chains, draws, observed data), for ``az.summary``.

    Args:
      samples: a dict from names to arrays with a leading sample axis (`posterior_samples`).
      num_chains: the number of chains to split the samples into (independent draws from a
        guide are exchangeable, so any split is valid); it must divide the number of samples.
      observed_data: the observed values, a dict from site names to arrays.
      posterior_predictive: draws of the observed sites (``Predictive``'s output), with the
        samples' leading axis.

    Returns:
      What ``arviz.from_dict`` returns (in ArviZ 1.x an ``xarray.DataTree`` with groups
      ``posterior`` and ``observed_data``; ``InferenceData`` in earlier versions).

    Examples:
      >>> import numpy as np, progvi as pv
      >>> data = pv.interop.to_arviz({"mu": np.zeros(400)}, num_chains=4,
      ...                            observed_data={"y": np.ones(3)})
      >>> data["posterior"]["mu"].shape
      (4, 100)
    """
    try:
        import arviz
    except ImportError as e:  # pragma: no cover - the environment has it
        raise ImportError("to_arviz needs ArviZ: pip install arviz") from e
    predicted = dict(posterior_predictive or {})
    sizes = {np.shape(v)[0] for v in [*samples.values(), *predicted.values()]}
    if len(sizes) != 1:
        raise ValueError(
            f"to_arviz: the samples must share one leading (sample) axis; their sizes are "
            f"{sorted(sizes)}."
        )
    (size,) = sizes
    if not isinstance(num_chains, int) or num_chains < 1 or size % num_chains:
        raise ValueError(
            f"to_arviz: num_chains={num_chains!r} must be a positive int dividing the "
            f"{size} samples."
        )

    def chains(values):
        return {name: np.asarray(v).reshape((num_chains, size // num_chains) + np.shape(v)[1:])
                for name, v in values.items()}

    groups = {"posterior": chains(samples)}
    if predicted:
        groups["posterior_predictive"] = chains(predicted)
    if observed_data is not None:
        groups["observed_data"] = {name: np.asarray(v) for name, v in observed_data.items()}
    return arviz.from_dict(groups)


__all__ = ["posterior_samples", "to_arviz"]
