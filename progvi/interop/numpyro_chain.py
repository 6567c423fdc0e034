"""The body of a NumPyro ``scan`` as a chain whose state is summed out (`pv.enum_chain`).

NumPyro writes a hidden Markov model as ``scan(transition, init, xs)`` (or a ``markov`` loop)
whose ``transition(carry, x) -> (carry, y)`` samples the state with ``numpyro.sample`` (marked
``infer={"enumerate": "parallel"}``) and observes the emission with ``obs=``. `numpyro_chain`
runs that same body under a messenger that sends the latent site to `pv.enum_chain`, which
enumerates it, and adds the observed sites' log densities to the step's log weight.
`sum_scan` does the same for a ``scan`` inside a model that `pv.interop.numpyro` scores.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger

from ..adev.chain import enum_chain
from ..adev.handlers import sample
from .numpyro import ModelError

SEEN = "_progvi_chain_seen"  # the key of a body's message that records what the chain used


class _Step(Messenger):
    """One run of the body: the latent site to the chain, observed sites to the log weight."""

    def __init__(self, name: str, batch_ndim: int | None):
        super().__init__()
        self.name, self.batch_ndim = name, batch_ndim
        self.log_weight = jnp.zeros(())

    def process_message(self, msg):
        if msg["type"] == "sample":
            observed = msg["is_observed"]
            log_density = msg["fn"].log_prob(msg["value"]) if observed else None
            self._check_batch(msg, log_density)
            if observed:
                if msg.get("scale") is not None:
                    log_density = msg["scale"] * log_density
                self.log_weight = self.log_weight + jnp.sum(log_density)
            else:
                if msg.get("scale") is not None or msg.get("mask") is not None:
                    raise ModelError(
                        f"pv.interop.numpyro_chain({self.name}): the state {msg['name']!r} is "
                        "scaled or masked (numpyro.handlers.scale or mask), which the forward "
                        "algorithm cannot apply to a transition. Scale or mask only the "
                        "observed sites."
                    )
                msg["value"] = sample(msg["name"], msg["fn"])
            # What the chain used: an outer messenger that changes it later is refused.
            msg[SEEN] = (msg["fn"], msg["value"], msg.get("scale"), msg.get("mask"))
        elif msg["type"] in ("param", "control_flow"):
            what = "numpyro.param" if msg["type"] == "param" else "a nested scan"
            raise ModelError(
                f"pv.interop.numpyro_chain({self.name}): the transition calls {what} "
                f"({msg.get('name')!r}); a chain's body samples its state and observes. Pass "
                "parameters by closure (their gradients flow), and nest no loops in the body."
            )

    def _check_batch(self, msg, log_density):
        # Dimensions left of the enclosing model's plates are the enumeration dimensions of
        # sites outside the chain: summing the step's log weight over them would be wrong.
        ndim = max(len(msg["fn"].batch_shape), jnp.ndim(log_density) if msg["is_observed"] else 0)
        if self.batch_ndim is not None and ndim > self.batch_ndim:
            raise ModelError(
                f"pv.interop.numpyro_chain({self.name}): site {msg['name']!r} depends on a site "
                "enumerated outside the chain, which is not summed jointly with it. Give that "
                "site a value (a guide), or move it into the chain's state."
            )


def numpyro_chain(transition: Callable, init: Any, xs: Any = None, *,
                  length: int | None = None) -> jax.Array:
    """The log marginal likelihood of a NumPyro ``scan`` body, its discrete state summed out.

    The body is the ``transition(carry, x) -> (carry, y)`` one would pass to
    ``numpyro.contrib.control_flow.scan``: it samples one discrete latent state per step (its
    ``infer`` marks are not needed) and observes with ``obs=``. The result is
    $\\log p(x_{1:T})$ by the forward algorithm in time linear in the length, with exact
    gradients (see `pv.enum_chain`, whose conditions apply: one latent site per step, a carry
    computed from the state). NumPyro 0.22's ``TraceEnum_ELBO`` over ``control_flow.scan`` of
    such a body can disagree with the exact value; its ``markov`` loop agrees with this.

    Args:
      transition: the body, ``(carry, x) -> (carry, y)``; ``y`` is ignored.
      init: the carry before the first step.
      xs: per-step inputs (the observations) with a leading time axis, or None.
      length: the number of steps, needed when `xs` is None.

    Returns:
      The log marginal likelihood, a scalar.

    Examples:
      >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, progvi as pv
      >>> trans = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # row 2: the start
      >>> def transition(z, x):
      ...     z = numpyro.sample("z", dist.Categorical(probs=trans[z]),
      ...                        infer={"enumerate": "parallel"})
      ...     numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)
      ...     return z, None
      >>> log_px = pv.interop.numpyro_chain(transition, 2, jnp.array([-0.9, 1.2, 0.8]))
      >>> print(f"{log_px:.4f}")
      -5.0136
    """
    return chain_log_marginal(transition, init, xs, length)


def chain_log_marginal(transition, init, xs, length, batch_ndim=None):
    """`numpyro_chain`, refusing body sites with more than `batch_ndim` batch dimensions."""
    name = getattr(transition, "__name__", "transition")

    def step(carry, x):
        messenger = _Step(name, batch_ndim)
        with messenger:
            out = transition(carry, x)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ModelError(
                f"pv.interop.numpyro_chain({name}): the transition must return (carry, y), as "
                f"for numpyro's scan; it returned {type(out).__name__}."
            )
        return out[0], messenger.log_weight

    step.__name__ = name
    return enum_chain(step, init, xs, length=length)


def sum_scan(msg, model: str, allowed: bool, batch_ndim: int | None):
    """Sums out the chain of a ``control_flow`` message of ``numpyro.contrib.control_flow.scan``.

    For `pv.interop.numpyro`'s messenger while it scores a model: checks what the forward
    algorithm cannot take, answers the message so that NumPyro replays none of the body's sites
    (they are summed out), and returns the factor's name and the chain's log marginal. `allowed`
    is False where the states would have to be drawn; `batch_ndim` is the model's plate nesting
    where sites outside the chain are enumerated (None where none are).
    """
    fn_name = getattr(msg["fn"], "__name__", type(msg["fn"]).__name__)
    if fn_name != "scan_wrapper":
        raise ModelError(
            f"{model} uses a numpyro control-flow primitive ({fn_name}) that the adapter does "
            "not run. Write the loop as a Python loop, or the model with pv.scan."
        )
    body, init, xs, length, reverse = msg["args"]
    where = f"numpyro's scan({getattr(body, '__name__', 'body')}) in {model}"
    if not allowed:
        raise ModelError(
            f"{where}: the adapter sums a scan's discrete states out exactly (the forward "
            "algorithm, in assess and pv.density), but it does not draw them or read them from "
            "a choice map (simulate, generate, or the scan in a guide). Use the model for its "
            "density, or write the chain with pv.scan, whose states can be drawn."
        )
    history = msg["kwargs"].get("history", 1)
    if reverse or history != 1:
        raise ModelError(
            f"{where} has reverse={reverse} and history={history}; the adapter sums out chains "
            "run forwards with history=1 (a first-order Markov state). Reverse xs yourself, or "
            "write a higher-order chain's state as a tuple."
        )
    if msg["kwargs"].get("substitute_stack"):
        raise ModelError(
            f"{where} is inside numpyro.handlers.condition or substitute, which would give its "
            "sites values that the summed-out chain does not read. Observe inside the scan's "
            "body with obs=."
        )
    log_marginal = chain_log_marginal(body, init, xs, length, batch_ndim)
    msg["value"] = ((length, None, None), (SimpleNamespace(trace={}), None))
    return where, log_marginal


def check_unchanged(msg, model: str):
    """Refuses a body's site that a messenger outside the scan changed after the chain used it."""
    used = msg.get(SEEN)
    now = (msg["fn"], msg["value"], msg.get("scale"), msg.get("mask"))
    if used is not None and any(a is not b for a, b in zip(now, used, strict=True)):
        raise ModelError(
            f"site {msg['name']!r} in the scan of {model} is changed by a numpyro handler "
            "outside the scan (scale, mask, condition or substitute) after the summed-out chain "
            "has scored it. Put the handler inside the scan's body, on its observed sites."
        )
