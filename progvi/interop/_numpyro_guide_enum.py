"""The ELBO of a NumPyro guide whose enumerated sites lie in plates, each datapoint's sum exact.

A guide site marked ``infer={"enumerate": "parallel"}`` inside a plate of N datapoints holds N
variables; summing them jointly costs K^N. The ELBO is a sum of log densities, each a function of
a few of them, so its expectation over them is a sum of small sums. The guide runs with each
enumerated site laid along an enumeration dimension of its own (as a model's sum lays it,
`progvi.interop._numpyro_enum`) and its other sites drawn through `pv.sample` with their
strategies; the model runs on those values. Every log density is then a table over the
enumeration dimensions and the plates. With Q the guide's distribution of the enumerated values
(the product of their conditional tables) and F the sum of the log densities, the model's minus
the guide's, each scaled as subsampling asks,

    E_Q[F] = d/dε log Σ_z Q(z) exp(ε F(z))   at ε = 0,

and the log-sum is the plated variable elimination of `contract` over the tables of Q and εF:
K·N for independent datapoints. The sites the guide draws stay draws, so the value is an
unbiased estimate of the ELBO whose enumerated part is exact, as ``TraceEnum_ELBO`` computes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import MaskedDistribution

from ..gen.choices import ChoiceError, choice_value, missing
from ._numpyro_enum import Factor, contract
from .numpyro import ModelError, NumPyroModel, _enumerated, any_value, draw_in_program


def _model_values(model, guide_values: dict, obs, enumerating: list):
    """The model's latent sites read from the guide's values (tables included) and `obs`."""

    def latent(name, fn, sample_shape, msg):
        expected = tuple(fn.shape(tuple(sample_shape)))
        if name in obs:
            return choice_value(name, fn, obs[name], sample_shape), True
        if name not in guide_values:
            if _enumerated(msg):
                enumerating.append(name)
                return jnp.zeros(expected, int if fn.support.is_discrete else float), True  # probe
            raise missing(name, model.name)
        value = guide_values[name]
        try:
            jnp.broadcast_shapes(jnp.shape(value), expected)
        except ValueError:
            raise ChoiceError(
                lambda a: f"the guide's value at {a!r} has shape {jnp.shape(value)}, which does "
                f"not broadcast with the shape {expected} the model draws there. Give the "
                "guide's site the model's plates.",
                name,
            ) from None
        return value, True

    return latent


def plate_nesting(guide: NumPyroModel, model, obs, model_args, guide_args) -> int | None:
    """The plate nesting of guide and model if the guide enumerates a site in a plate, or None.

    Both run once on abstract values (`jax.eval_shape`); nothing is drawn in the program.
    """
    plated, nesting = [], []

    def draw(name, fn, sample_shape, msg):
        if _enumerated(msg) and tuple(sample_shape) + tuple(fn.batch_shape) != ():
            plated.append(name)
        return any_value(name, fn, sample_shape, msg)

    def probe(model_args, guide_args, obs):
        g, _ = guide._run(draw, guide_args)
        if not plated:
            return
        if not isinstance(model, NumPyroModel):
            raise ModelError(
                f"the guide {guide.name} enumerates {plated} inside plates, which pv.elbo sums "
                "out against the model's log density of each datapoint; the model "
                f"{model.name} is not a NumPyro model (pv.interop.numpyro), so it has no such "
                "terms. Write the model in NumPyro, or draw the sites with pv.enum in a pv.plate."
            )
        enumerating = []
        m, _ = model._run(_model_values(model, g.choices, obs, enumerating), model_args,
                          sum_scans=True)
        if enumerating:
            raise ModelError(
                f"the guide {guide.name} enumerates {plated} inside plates and the model "
                f"{model.name} enumerates {enumerating} as well: pv.elbo sums a guide's plated "
                "sites only against a model with none of its own. Enumerate those in the guide "
                "too, or give them values there."
            )
        nesting.append(max(g.batch_ndim, m.batch_ndim))

    jax.eval_shape(probe, model_args, guide_args, dict(obs))
    return nesting[0] if plated else None


def enumerated_elbo(guide: NumPyroModel, model: NumPyroModel, obs, model_args, guide_args,
                    nesting: int) -> jax.Array:
    """``E_q[log p(x, z) - log q(z)]``, summed exactly over the guide's enumerated sites."""

    def latent(name, fn, sample_shape, msg):
        if _enumerated(msg):
            if isinstance(fn, MaskedDistribution):
                raise ModelError(
                    f"site {name!r} in {guide.name} is enumerated and masked: its masked "
                    "datapoints would have no distribution to weigh their values by. Mask the "
                    "model's sites there instead, or leave the mask out of the guide."
                )
            return None, False
        if sample_shape:
            fn = fn.expand(tuple(sample_shape) + tuple(fn.batch_shape))
        return draw_in_program(name, fn), False

    g, _ = guide._run(latent, guide_args, nesting=nesting)
    values = {**g.choices, **g.summed}
    m, _ = model._run(_model_values(model, values, obs, []), model_args, nesting=nesting,
                      sum_scans=True)
    model._no_extra({**values, **obs}, m)

    # Q: the enumerated sites' conditionals, unscaled (a subsampling plate scales F, not Q).
    weights = [Factor(f.name, f.log_density, None) for f, _ in g.factors if f.name in g.summed]
    terms = [(f, 1.0) for f, _ in m.factors] + [(f, -1.0) for f, _ in g.factors]

    def log_sum(eps):
        tilted = [Factor(f.name, sign * eps * _scaled(f), None) for f, sign in terms]
        return contract(weights + tilted, g.variables, nesting, ModelError)

    eps = jnp.zeros((), jnp.result_type(float))
    return jax.jvp(log_sum, (eps,), (jnp.ones_like(eps),))[1]


def _scaled(factor: Factor):
    return factor.log_density if factor.scale is None else factor.scale * factor.log_density


__all__ = ["enumerated_elbo", "plate_nesting"]
