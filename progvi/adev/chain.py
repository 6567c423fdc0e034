"""Exact enumeration of Markov chains: the forward algorithm, in time linear in the length.

A chain is a step ``(carry, x_t) -> (carry, log_weight_t)`` run over time that samples one
discrete state ``z_t`` per step from a distribution that may depend on the carry. Its log
marginal is

$$
\\log \\sum_{z_{1:T}} \\prod_{t=1}^T p(z_t \\mid c_{t-1})\\, e^{w_t(c_{t-1}, z_t)},
$$

a sum of $K^T$ terms. When the carry ``c_t`` depends on the previous carry only through the
state ``z_t`` (the Markov property: ``c_t = g(z_t, x_t)``), the sum factorizes into the forward
recursion over the $K$ values of the state,

$$
\\alpha_1(k) = \\log p(z_1 = k \\mid c_0) + w_1(c_0, k), \\qquad
\\alpha_{t}(k) = \\operatorname{logsumexp}_j \\big(\\alpha_{t-1}(j)
    + \\log p(z_t = k \\mid c_{t-1}(j)) + w_t(c_{t-1}(j), k)\\big),
$$

and the log marginal is $\\operatorname{logsumexp}_k \\alpha_T(k)$: $T K^2$ runs of the step,
vmapped over the pairs $(j, k)$ and scanned over time. The recursion is plain JAX (the state's
site is answered by a handler, not bound as a sample site), so its value is exact and `jax.grad`
(reverse mode through the scan) gives the exact gradient, inside expectation programs and out.

The Markov property is checked on the step's jaxpr at trace time: a carry that depends on the
previous carry other than through the state would need the whole path, and is refused.

References:
  Rabiner, "A Tutorial on Hidden Markov Models and Selected Applications in Speech
  Recognition", Proc. IEEE 1989 (the forward algorithm).
  Obermeyer et al., "Tensor Variable Elimination for Plated Factor Graphs", ICML 2019 (the
  same sum-product in Pyro's TraceEnum_ELBO).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from ._compat import Literal
from .enum import Enum, support, support_size
from .errors import ProgramError
from .handlers import Handler, active, handle

Transition = Callable[[Any, Any, Any], tuple[Any, Any]]  # (carry, x, value) -> (log w, carry)


class ChainState(Handler):
    """Answers the one enumerated site of a chain's step with a given value of the state.

    `where` names the chain in error messages; a `value` of None answers with a zero of the
    site's dtype (to find the site). After the step has run, `dist` and `address` describe the
    site; `log_prob` is its log density at the value.
    """

    def __init__(self, value, where: str):
        self.value, self.where = value, where
        self.address = self.dist = self.log_prob = None

    def sample(self, site, below):
        if getattr(site.dist, "sample_in_program", None) is not None:
            raise ProgramError(
                f"{self.where}: the step samples a call of a generative function at "
                f"{site.address!r}; a chain's step samples one discrete state with a "
                "distribution. Inline the call's sites into the step."
            )
        if self.address is not None:
            raise ProgramError(
                f"{self.where}: the step samples {self.address!r} and {site.address!r}, but the "
                "chain enumerates one state per step. Combine them into one discrete state (a "
                "Categorical over their joint values), or sample the others outside the chain."
            )
        check_state(site.address, site.dist, site.strategy, self.where)
        self.address, self.dist = site.address, site.dist
        value = self.value
        if value is None:
            shape = jax.eval_shape(site.dist.sample, jax.random.key(0))
            value = jnp.zeros(shape.shape, shape.dtype)
        self.log_prob = site.dist.log_prob(value)
        return value


def summing_out(strategy) -> bool:
    """Whether a site left out of the given choices is a chain's state to be summed out.

    True for an enumerated site (`pv.enum`, `pv.enum_parallel`) run by a chain (`pv.scan`'s
    density and assess, `pv.enum_chain`); elsewhere a missing value stays an error.
    """
    return isinstance(strategy, Enum) and any(isinstance(h, ChainState) for h in active())


def check_state(address, dist, strategy, where: str) -> None:
    """Raises a `ProgramError` if the site at `address` cannot be a chain's enumerated state."""
    if strategy is not None and not isinstance(strategy, Enum):
        raise ProgramError(
            f"{where}: sample site {address!r} asks for pv.{strategy.name}, but the chain "
            "sums its state out exactly (the forward algorithm). Leave strategy out or write "
            "pv.enum_parallel; to estimate the states instead, sample them in a Python loop or "
            "pv.scan with that strategy."
        )
    if not getattr(dist, "has_enumerate_support", False):
        raise ProgramError(
            f"{where}: sample site {address!r} draws from {type(dist).__name__}, whose support "
            "is not finite, so the chain cannot sum it out. Only a discrete state (Categorical, "
            "Bernoulli, ...) can be enumerated; a continuous latent that depends on the state "
            "is not marginalizable here: sample it outside the chain (in the guide) and pass "
            "its values as xs."
        )
    if dist.batch_shape != () or dist.event_shape != ():
        raise ProgramError(
            f"{where}: sample site {address!r} has batch shape {dist.batch_shape} and event "
            f"shape {dist.event_shape}; the chain's state is one scalar per step. Combine the "
            "components into one Categorical over their joint values."
        )


def _state_support(where, transition_probe, init, x0):
    """The support of the state, found by running the first step once."""
    probe = ChainState(None, where)
    with handle(probe):
        transition_probe(init, x0)
    if probe.dist is None:
        raise ProgramError(
            f"{where}: the step samples no state. A chain's step samples one discrete state "
            "with pv.sample (e.g. pv.sample('z', dist.Categorical(probs=trans[z]))) at every "
            "step."
        )
    size = support_size(lambda: probe.dist)
    if size is None:
        raise ProgramError(
            f"{where}: the support of {probe.address!r} ({type(probe.dist).__name__}) depends "
            "on traced values, so its size is unknown at trace time. Give its size as a "
            "constant (e.g. a Categorical with a fixed number of probabilities)."
        )
    Enum().check_size(probe.address, probe.dist, size)
    dtype = jax.eval_shape(probe.dist.sample, jax.random.key(0)).dtype
    return probe.address, support(probe.dist, dtype)


def check_markov(where: str, address: str, transition: Transition, carry, x, value) -> None:
    """Raises a `ProgramError` if the new carry depends on the previous one, not only the state.

    The dependence is read from the jaxpr of ``transition(carry, x, value)``: the state's value
    is an input of its own there, so any path from the carry to the new carry bypasses it.
    """
    closed, shape = jax.make_jaxpr(lambda c, x, v: transition(c, x, v)[1], return_shape=True)(
        carry, x, value)
    jaxpr = closed.jaxpr
    n_carry = len(jax.tree.leaves(carry))
    reached = set(jaxpr.invars[:n_carry])
    for eqn in jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    leaves = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(shape)[0]]
    bad = [leaf or "(the carry)" for leaf, v in zip(leaves, jaxpr.outvars, strict=True)
           if not isinstance(v, Literal) and v in reached]
    if bad:
        raise ProgramError(
            f"{where}: the new carry {bad} depends on the previous carry other than through the "
            f"state {address!r}, so the chain is not Markov in its state and summing it out "
            "would need every path (K^T of them). Return a carry computed from the state (and "
            "xs) only, e.g. `return z, log_weight`; pass constants by closure or in xs."
        )


def forward(where: str, transition: Transition, probe, init, xs, length: int):
    """The log marginal of a chain by the forward algorithm; see the module docstring.

    Args:
      where: the chain's name in error messages.
      transition: ``(carry, x, value) -> (log weight, new carry)``, the log weight including
        the state's log density at `value` (answered by a `ChainState` handler inside).
      probe: ``(carry, x) -> anything``, the step run once to find the state's site.
      init: the carry before the first step.
      xs: per-step inputs with a leading time axis (None: none).
      length: the number of steps.
    """
    if length == 0:
        return jnp.zeros((), jnp.result_type(float))
    first = jax.tree.map(lambda x: x[0], xs)
    rest = jax.tree.map(lambda x: x[1:], xs)
    address, values = _state_support(where, probe, init, first)
    check_markov(where, address, transition, init, first, values[0])
    # Step 1 from the given carry: one log weight and one carry per value of z_1.
    alpha, carry = jax.vmap(lambda v: transition(init, first, v))(values)
    alpha = jnp.broadcast_to(alpha, values.shape)

    def step(state, x):
        alpha, carry = state
        # Every pair (previous value j, value k); the new carry does not depend on j (checked
        # above), so row 0 holds it.
        pairs = jax.vmap(jax.vmap(transition, (None, None, 0)), (0, None, None))
        weights, new_carry = pairs(carry, x, values)
        alpha = logsumexp(alpha[:, None] + weights, axis=0)
        return (alpha, jax.tree.map(lambda c: c[0], new_carry)), None

    (alpha, _), _ = jax.lax.scan(step, (alpha, carry), rest, length=length - 1)
    return logsumexp(alpha)


def enum_chain(step: Callable, init: Any, xs: Any = None, *,
               length: int | None = None) -> jax.Array:
    """The log marginal of a Markov chain whose discrete states are summed out exactly.

    ``step(carry, x) -> (carry, log_weight)`` samples one discrete state with `pv.sample`
    (any scalar distribution with a finite support) and returns the new carry and a log weight
    (the log density of the step's observations given the state). The result is
    $\\log \\sum_{z_{1:T}} \\prod_t p(z_t \\mid c_{t-1}) \\exp(w_t)$, computed by the forward
    algorithm in time linear in the length ($T K^2$ runs of the step, vmapped), with exact
    gradients by `jax.grad`. With observation log densities as weights it is $\\log p(x_{1:T})$
    of a hidden Markov model.

    The new carry must depend on the previous carry only through the state (checked at trace
    time), the state's support must not change between steps, and the step samples no other
    site. It is plain JAX: call it inside an expectation program (its value enters the
    objective as an exact term; sites outside the chain keep their strategies) or outside one.

    Args:
      step: ``(carry, x) -> (carry, log_weight)``.
      init: the carry before the first step (e.g. a start state).
      xs: per-step inputs with a leading time axis, or None (then give `length`).
      length: the number of steps; needed when `xs` is None.

    Returns:
      The log marginal, a scalar.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> trans = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # row 2: the start
      >>> locs, xs = jnp.array([-1.0, 1.0]), jnp.array([-0.9, 1.2, 0.8])
      >>> def step(z, x):
      ...     z = pv.sample("z", dist.Categorical(probs=trans[z]))
      ...     return z, dist.Normal(locs[z], 1.0).log_prob(x)
      >>> log_px = pv.enum_chain(step, 2, xs)
      >>> paths = jnp.stack(jnp.meshgrid(*[jnp.arange(2)] * 3, indexing="ij")).reshape(3, -1)
      >>> def log_joint(z):  # brute force over the 8 paths
      ...     prev = jnp.concatenate([jnp.array([2]), z[:-1]])
      ...     return jnp.sum(jnp.log(trans[prev, z]) + dist.Normal(locs[z], 1.0).log_prob(xs))
      >>> exact = jax.scipy.special.logsumexp(jax.vmap(log_joint, 1)(paths))
      >>> print(f"{log_px:.4f} {exact:.4f}")
      -5.0136 -5.0136
      >>> g = jax.grad(lambda l: pv.enum_chain(step, 2, xs + l))(0.0)  # exact gradient
    """
    where = f"pv.enum_chain({getattr(step, '__name__', 'step')})"
    length = chain_length(where, xs, length)

    def transition(carry, x, value):
        state = ChainState(value, where)
        with handle(state):
            new_carry, log_weight = _split(where, step(carry, x))
        return state.log_prob + jnp.asarray(log_weight), new_carry

    return forward(where, transition, step, init, xs, length)


def _split(where, out):
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise ProgramError(
            f"{where}: the step must return a pair (carry, log_weight), got "
            f"{type(out).__name__}. End it with `return z, dist.Normal(locs[z], 1.0)"
            ".log_prob(x)` (a log weight of 0.0 if the step observes nothing)."
        )
    if jnp.shape(out[1]) != ():
        raise ProgramError(
            f"{where}: the step's log weight has shape {jnp.shape(out[1])}; it must be a "
            "scalar. Sum the log densities of the step's observations (jnp.sum(...))."
        )
    return out[0], out[1]


def chain_length(where: str, xs, length: int | None) -> int:
    """The number of steps, from the leading axes of `xs` or `length` (which must agree)."""
    lengths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(xs)}
    if None in lengths or len(lengths) > 1:
        raise ProgramError(
            f"{where}: the leaves of xs have leading axes {sorted(map(str, lengths))}; each "
            "needs the same leading (time) axis."
        )
    if not lengths:
        if length is None:
            raise ProgramError(
                f"{where} was given no xs, so the number of steps is unknown. Pass length=T."
            )
        return int(length)
    (n,) = lengths
    if length is not None and n != length:
        raise ProgramError(f"{where}: length={length} but xs has {n} steps. Make them agree.")
    return n
