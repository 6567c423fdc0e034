"""`report`: a metric of the program, recorded next to its value and never differentiated."""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import ArrayLike

from ._compat import Primitive, batching
from .errors import ProgramError
from .handlers import active
from .interpreter import RULES
from .state import write_metric

report_p = Primitive("progvi_report")
report_p.multiple_results = True


def _impl(value, *, name):
    raise ProgramError(
        f"pv.report({name!r}, ...) was evaluated outside an expectation program; call it inside "
        "one."
    )


def _batch(args, dims, *, name):
    raise ProgramError(
        f"pv.report({name!r}, ...) is inside a jax.vmap (or pv.particles) of the program, where "
        "one metric has many values. Report a summary outside the vmap, e.g. "
        f"pv.report({name!r}, jnp.mean(values)); inside pv.plate, metrics are averaged over the "
        "datapoints."
    )


report_p.def_abstract_eval(lambda value, *, name: [])
report_p.def_impl(_impl)
batching.primitive_batchers[report_p] = _batch


def report(name: str, value: ArrayLike) -> None:
    """Inside an expectation program: records `value` as the metric `name` of this estimate.

    Metrics are values the program computes beside its objective (an accuracy, a count, a
    statistic of a batch); they are not differentiated and do not change the estimate. `fit`
    records each one in ``FitResult.metrics`` at every step; `make_step`'s
    ``step_with_metrics`` returns them; ``program.evaluate`` returns them with the value. Inside
    `pv.plate` a metric is the mean over the datapoints.

    Args:
      name: the metric's name, unique within the program.
      value: an array (usually a scalar).

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def loss(m):
      ...     z = pv.sample("z", dist.Normal(m, 1.0))
      ...     pv.report("z", z)
      ...     return z ** 2
      >>> out = loss.evaluate(jax.random.key(0), None, 0.5)
      >>> print(bool(jnp.isclose(out.metrics["z"] ** 2, out.value)))
      True
    """
    if not isinstance(name, str) or not name:
        raise ProgramError(f"pv.report needs a non-empty string name, got {name!r}.")
    if not active():
        raise ProgramError(
            f"pv.report({name!r}, ...) is called inside an expectation program "
            "(@pv.expectation); outside one there is no estimate to report it with."
        )
    report_p.bind(jnp.asarray(value), name=name)


def report_rule(eqn, invals, frame, state, kont):
    ((value, _),) = invals
    write_metric(state, eqn.params["name"], value)
    return kont([], state)


RULES["progvi_report"] = report_rule

__all__ = ["report"]
