"""Expectation programs: `@pv.expectation`, `estimate`, `grad`, and strategy overrides."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import inspect
import operator
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import control_flow, log_expectation, plate, report  # noqa: F401  (register rules)
from ._compat import SymbolicZero
from .addresses import match, site_addresses
from .errors import AddressError, ProgramError, SampleOutsideProgramError, StrategyError
from .handlers import _STACK, Handler, active, dispatch
from .interpreter import Frame, State, finish, run
from .keys import check_key, shown
from .learned_baseline import learned_field
from .primitive import bind_sample
from .reinforce import reinforce
from .reparam import reparam
from .state import Sink, init_states
from .static import hide, strip
from .strategy import Strategy, check_strategy
from .validation import reraise, validated, validating


def default_strategy(dist) -> Strategy:
    """Reparameterization where the distribution has it, REINFORCE otherwise."""
    return reparam if dist.has_rsample else reinforce


class _Bind(Handler):
    """Bottom of an expectation program's stack: turns each site into a `sample_p` equation."""

    def sample(self, site, below):
        nested = getattr(site.dist, "sample_in_program", None)
        if nested is not None:
            # A call of a generative function: its sites re-enter the whole stack (so strategy
            # overrides see them) under the call's address.
            stack = active()
            return nested(site.address, lambda s: dispatch(stack, s))
        _check_distribution(site)
        strategy = site.strategy or default_strategy(site.dist)
        check_strategy(site.address, strategy)
        if site.within and not strategy.is_local:
            raise StrategyError(_batched_site(site, strategy))
        strategy.check(site.address, site.dist)
        dist = validated(site.address, site.dist) if validating() else site.dist
        return bind_sample(site.address, dist, strategy, site.batch)


def _check_distribution(site) -> None:
    dist = site.dist
    if isinstance(dist, type):
        raise ProgramError(
            f"pv.sample({site.address!r}, {dist.__name__}): {dist.__name__} is a class, not a "
            f"distribution. Pass an instance with its parameters, e.g. "
            f"pv.sample({site.address!r}, dist.{dist.__name__}(...))."
        )
    if not (callable(getattr(dist, "sample", None)) and callable(getattr(dist, "log_prob", None))
            and hasattr(dist, "has_rsample")):
        raise ProgramError(
            f"pv.sample({site.address!r}, ...) got {shown(dist)}, not a distribution. Pass a "
            "numpyro distribution (pv.sample('z', dist.Normal(0.0, 1.0))), a call of a "
            "generative function (pv.sample('enc', encoder(x))), or adapt a foreign one with "
            "pv.interop."
        )


def _batched_site(site, strategy) -> str:
    within = site.within[-1]
    if within == "pv.particles":
        where = (
            "is drawn once per particle of pv.particles. K-particle objectives and families "
            "(pv.iwae, pv.iwae_dreg, pv.vimco, pv.renyi, pv.rws, pv.wake_p, pv.wake_q, "
            "pv.forward_kl, pv.normalize, pv.marginal with num_particles > 1) draw their K "
            "particles that way, as one batched site"
        )
        fix = (
            "Use a local strategy there: pv.reinforce for a discrete choice (pv.vimco gives it "
            "per-particle baselines), pv.reparam for a continuous one; or use pv.elbo (one "
            f"particle, no batching), where pv.{strategy.name} sees the rest of the program."
        )
    else:
        where = f"is drawn once per datapoint of {within}, as one batched site"
        fix = (
            "Use a local strategy there (pv.reparam, pv.reinforce), or vmap the whole estimate "
            "over the datapoints (or use pv.plate), where each datapoint has its own "
            "continuation."
        )
    return (
        f"sample site {site.address!r} {where}, so only local strategies (those that need no "
        f"continuation) apply, but its strategy pv.{strategy.name} needs the rest of the "
        f"program. {fix}"
    )


class _Override(Handler):
    """Replaces the strategy of every site whose address matches a pattern.

    It records the addresses it sees, so that a pattern that matches none of them (a typo) is
    an error once the program is traced (`check`).
    """

    def __init__(self, patterns: Mapping[str, Strategy]):
        self.patterns = patterns
        self.seen: list[str] = []

    def sample(self, site, below):
        if getattr(site.dist, "sample_in_program", None) is not None:
            return below(site)  # a call: its own sites come back through the stack
        self.seen.append(site.address)
        strategy = match(self.patterns, site.address)
        return below(site if strategy is None else dataclasses.replace(site, strategy=strategy))

    def check(self, name: str) -> None:
        unmatched = [p for p in self.patterns
                     if not any(fnmatch.fnmatchcase(a, p) for a in self.seen)]
        if unmatched:
            found = sorted(set(self.seen))
            raise AddressError(
                f"pv.with_strategies on {name!r}: the pattern(s) {unmatched} match no sample "
                f"site of the program, whose addresses are {found or '(none: it samples nothing)'}"
                ". Correct the spelling (addresses of nested calls are 'call/choice'; a glob "
                "such as 'enc/*' matches all of them) or remove the pattern."
            )


class Evaluation(NamedTuple):
    """What `Expectation.evaluate` returns."""

    value: jax.Array  # the estimate
    state: dict  # the estimator states for the next step, by address
    metrics: dict  # the values recorded with `pv.report`, by name
    aux_loss: jax.Array = 0.0  # Σ squared errors of the learned baselines: minimized by training


class Expectation:
    """An expectation program: ``E[fn(*args)]`` over the random choices `fn` makes.

    Create one with `pv.expectation`. `estimate(key, *args)` is one unbiased estimate of the
    expectation, differentiable by JAX: its derivative is the ADEV estimate of the derivative.
    """

    def __init__(self, fn: Callable, overrides: tuple[Mapping[str, Strategy], ...] = ()):
        self.fn = fn
        self.overrides = overrides
        functools.update_wrapper(self, fn)
        self._estimate, self._evaluate = _make_estimate(self)
        self._jitted = {}

    def __call__(self, *args):
        """Inside another expectation program: the same sites, in line (a nested expectation)."""
        if not _STACK.get():
            raise SampleOutsideProgramError(
                f"expectation program {self.__name__!r} was called directly. Call "
                f"{self.__name__}.estimate(key, *args) for an estimate, or call it inside another "
                "@pv.expectation to nest it."
            )
        self._check_arity(args, "called")
        return self._with_overrides(self.fn, *args)

    def _with_overrides(self, fn, *args):
        if not self.overrides:
            return fn(*args)
        handlers = [_Override(p) for p in self.overrides]
        with _nested(*handlers):
            out = fn(*args)
        for handler in handlers:
            handler.check(self.__name__)
        return out

    def trace(self, *args):
        """The program as a closed jaxpr whose `progvi_sample` equations are its sample sites."""

        def program(*args):
            with _fresh_stack(_Bind()):
                return self._with_overrides(self.fn, *args)

        self._check_arity(args, "estimated")
        # Under jax.disable_jit, lax.scan would unroll its body while tracing, one site per
        # iteration at the same address; the interpreter runs the program without jit anyway.
        with jax.disable_jit(False):
            closed, out_shape = jax.make_jaxpr(program, return_shape=True)(*hide(args))
        if not isinstance(out_shape, jax.ShapeDtypeStruct):
            raise ProgramError(
                f"expectation program {self.__name__!r} returned {jax.tree.structure(out_shape)}; "
                "it must return one array. Return e.g. jnp.stack([a, b]) or a scalar loss."
            )
        site_addresses(closed.jaxpr)
        return closed

    def estimate(self, key, *args) -> jax.Array:
        """One unbiased estimate of the expectation; `jax.grad` of it is an unbiased gradient.

        Examples:
          >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
          >>> @pv.expectation
          ... def loss(theta):
          ...     b = pv.sample("b", dist.Bernoulli(probs=theta), strategy=pv.enum)
          ...     return jnp.where(b > 0, 0.0, -theta / 2.0)
          >>> print(f"{loss.estimate(jax.random.key(0), 0.4):.2f}")  # enumeration: exact
          -0.12
        """
        self._check_key(key, "estimate")
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((key, args))):
            # Inside a transformation: a jit boundary here would make JAX trace the program
            # twice (its value and its JVP) when the caller differentiates.
            return self._estimate(key, *hide(args))
        return self._jit("estimate", lambda: self._estimate)(key, *args)

    def init_state(self, *args) -> dict:
        """The initial state of each stateful estimator in the program, keyed by address.

        Stateful estimators (``pv.compositional``, ``pv.reinforce`` with a
        `pv.train.Estimator` baseline, or your own) keep pure state between steps; `fit` and
        `make_step` create and thread it without any argument from you. Outside them, pass it
        to `estimate_with_state`. A program without stateful estimators has the state ``{}``.

        Examples:
          >>> import jax, numpyro.distributions as dist, progvi as pv
          >>> @pv.expectation
          ... def log_weight(m):
          ...     return pv.sample("y", dist.Normal(m, 1.0))
          >>> @pv.expectation
          ... def log_z(m):
          ...     return pv.log_expectation(log_weight, m, estimator=pv.compositional(gamma=0.1))
          >>> sorted(log_z.init_state(0.0))
          ['log_weight']
        """
        return init_states(self.trace(*args).jaxpr)

    def estimate_with_state(self, key, state, *args):
        """One estimate from the estimator states `state`, and the states for the next step.

        `state` is a dict keyed by address as `init_state` returns it (or as the previous call
        returned it); None means the initial states. The estimate is differentiable in `args`
        like `estimate`'s; the next states carry no gradient. `estimate(key, *args)` is
        ``estimate_with_state(key, None, *args)[0]``: outside `fit`, each call of `estimate`
        starts every stateful estimator from its initial state.

        Examples:
          >>> import jax, numpyro.distributions as dist, progvi as pv
          >>> @pv.expectation
          ... def log_weight(m):
          ...     return pv.sample("y", dist.Normal(m, 0.1))
          >>> @pv.expectation
          ... def log_z(m):
          ...     return pv.log_expectation(log_weight, m, estimator=pv.compositional(gamma=0.1))
          >>> state = log_z.init_state(2.0)
          >>> for t in range(200):
          ...     value, state = log_z.estimate_with_state(jax.random.key(t), state, 2.0)
          >>> print(f"{value:.1f}")  # log E[exp(y)] = 2 + 0.1**2 / 2
          2.0
        """
        return tuple(self.evaluate(key, state, *args)[:2])

    def evaluate(self, key, state, *args) -> Evaluation:
        """One estimate with everything the program computes beside it: an `Evaluation`.

        ``evaluate(key, state, *args)`` returns ``Evaluation(value, state, metrics)``: the
        estimate (differentiable in `args` like `estimate`'s), the estimator states for the next
        step (see `estimate_with_state`; `state` None means the initial ones), and the metrics
        the program recorded with `pv.report` (dict by name). Neither the states nor the metrics
        carry a gradient. ``Evaluation.aux_loss`` is the program's auxiliary loss: the squared
        errors of its learned baselines (`pv.learned_baseline`) against the terms their scores
        multiply, 0 without any. Its gradient trains the baselines' parameters; `fit` and
        `make_step` minimize it beside the objective, whichever the direction.
        """
        self._check_key(key, "evaluate")
        if state is not None and not isinstance(state, dict):
            raise TypeError(
                f"{self.__name__}: state={type(state).__name__}, but it must be the dict of "
                f"estimator states that {self.__name__}.init_state(*args) returns (or None for "
                "the initial states)."
            )
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((key, state, args))):
            return self._evaluate(key, state, *hide(args))
        return self._jit("evaluate", lambda: self._evaluate)(key, state, *args)

    def grad(self, key, *args, argnums: int | tuple[int, ...] = 0):
        """An unbiased estimate of the gradient of the expectation with respect to `argnums`.

        It is the objective's gradient alone: a learned baseline (`pv.learned_baseline`) enters
        the estimate stopped, so its parameters get zero here; its training gradient is that of
        ``evaluate(...).aux_loss``.

        Examples:
          >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
          >>> @pv.expectation
          ... def loss(theta):
          ...     b = pv.sample("b", dist.Bernoulli(probs=theta), strategy=pv.enum)
          ...     return jnp.where(b > 0, 0.0, -theta / 2.0)
          >>> print(f"{loss.grad(jax.random.key(0), 0.4):.2f}")  # d/dθ -(1-θ)θ/2 = θ - 1/2
          -0.10
        """
        return self._value_and_grad(key, args, argnums, "grad")[1]

    def value_and_grad(self, key, *args, argnums: int | tuple[int, ...] = 0):
        """The estimate and its gradient with respect to `argnums`, from the same draws."""
        return self._value_and_grad(key, args, argnums, "value_and_grad")

    def _value_and_grad(self, key, args, argnums, method):
        self._check_key(key, method)
        argnums = self._check_argnums(argnums, args, method)

        def build():
            def scalar(*a):
                out = self._estimate(*a)
                if out.shape != ():
                    raise ProgramError(
                        f"expectation program {self.__name__!r} returns shape {out.shape}, but "
                        "grad needs a scalar. Return a scalar (e.g. jnp.sum or jnp.mean of it), "
                        "or differentiate estimate with jax.jacobian."
                    )
                return out

            shifted = tuple(a + 1 for a in argnums) if isinstance(argnums, tuple) else argnums + 1
            return jax.value_and_grad(scalar, argnums=shifted)

        return self._jit(("value_and_grad", argnums), build)(key, *args)

    def _jit(self, name, build):
        # One compiled function per validation setting: the flag is read when JAX traces.
        name = (name, validating())
        if name not in self._jitted:
            fn = build()
            # A fresh function for each setting: jax.jit caches traces by function identity.
            # Callable leaves of the arguments (an equinox module's activation) travel in the
            # structure; a gradient with respect to one is None.
            jitted = jax.jit(lambda *args: fn(*args))
            self._jitted[name] = _reraising(lambda *args: strip(jitted(*hide(args))))
        return self._jitted[name]

    def _check_key(self, key, method: str) -> None:
        check_key(key, f"{self.__name__}.{method}(key, *args)",
                  f"{self.__name__}.{method}(jax.random.key(0), *args)")

    def _check_arity(self, args, how: str) -> None:
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # no signature (a builtin): the call itself complains
            return
        try:
            signature.bind(*args)
        except TypeError as err:
            fix = (f"Call {self.__name__}.estimate(key, *args) with the program's own arguments "
                   "after the key." if how == "estimated" else
                   f"Call {self.__name__}(*args) with the program's own arguments.")
            raise TypeError(
                f"expectation program {self.__name__}{signature} was {how} with {len(args)} "
                f"argument(s) ({err}). {fix}"
            ) from None

    def _check_argnums(self, argnums, args, method):
        n = len(args)
        many = isinstance(argnums, tuple)
        numbers = argnums if many else (argnums,)
        try:
            numbers = tuple(operator.index(a) for a in numbers)
        except TypeError:
            numbers = None
        if numbers is None or (many and not numbers) or any(not -n <= a < n for a in numbers):
            raise TypeError(
                f"{self.__name__}.{method}: argnums={argnums!r}, but the program was given {n} "
                f"argument(s) after the key, so argnums must be an int or a tuple of ints in "
                f"[{-n}, {n - 1}] (it counts the program's arguments, not the key: argnums=0 is "
                "the first argument after the key)."
            )
        numbers = tuple(a % n for a in numbers)
        for a in numbers:
            for path, leaf in jax.tree_util.tree_leaves_with_path(args[a]):
                try:
                    dtype = jnp.result_type(leaf)
                except TypeError:
                    continue  # not an array: JAX's own error says so
                if not jnp.issubdtype(dtype, jnp.inexact):
                    where = jax.tree_util.keystr(path)
                    raise TypeError(
                        f"{self.__name__}.{method}: argument {a}{where} is "
                        f"{shown(leaf)} of dtype {dtype}; gradients need floating-point "
                        "values. Pass a float (1.0, not 1; x.astype(jnp.float32)), or move the "
                        "integer argument out of argnums."
                    )
        return numbers if many else numbers[0]

    def __repr__(self):
        return f"<pv.expectation {self.__name__}>"


def _make_estimate(program: Expectation):
    def evaluate(key, states, args, tangents):
        closed = program.trace(*args)
        flat_args = jax.tree.leaves(args)
        flat_tangents = _flat_tangents(tangents, len(flat_args))
        duals = list(zip(flat_args, flat_tangents, strict=True))
        sink = Sink()
        ret, dret = run(closed.jaxpr, closed.consts, duals, Frame(key, states=states),
                        State(sink=sink), finish)
        before = init_states(closed.jaxpr) if states is None else states
        loss = sink.aux_loss(ret)
        return (ret, dret), loss, ({**before, **sink.finish(ret)}, sink.metrics)

    @jax.custom_jvp
    def estimate(key, *args):
        return evaluate(key, None, args, None)[0][0]

    def estimate_jvp(primals, tangents):
        key, *args = primals
        return evaluate(key, None, tuple(args), tuple(tangents[1:]))[0]

    estimate.defjvp(estimate_jvp, symbolic_zeros=True)

    @jax.custom_jvp
    def estimate_with_aux(key, states, *args):
        (ret, _), (loss, _), aux = evaluate(key, states, args, None)
        return ret, loss, aux

    def estimate_with_aux_jvp(primals, tangents):
        key, states, *args = primals
        (ret, dret), (loss, dloss), aux = evaluate(key, states, tuple(args), tuple(tangents[2:]))
        return (ret, loss, aux), (dret, dloss, jax.tree.map(_zero_tangent, aux))

    estimate_with_aux.defjvp(estimate_with_aux_jvp, symbolic_zeros=True)

    def evaluated(key, states, *args):
        value, loss, (new, metrics) = estimate_with_aux(key, states, *args)
        return Evaluation(value, new, metrics, loss)

    return estimate, evaluated


def _reraising(fn):
    """`fn`, re-raising a `ValidationError` that a compiled run raised inside a callback."""

    @functools.wraps(fn)
    def call(*args):
        try:
            return fn(*args)
        except (jax.errors.JaxRuntimeError, ValueError) as err:
            # A callback's error reaches here as a JaxRuntimeError (or, from JAX's C++ dispatch
            # of a cached function, a ValueError) whose message holds its traceback.
            reraise(err)
            raise

    return call


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


def _flat_tangents(tangents, n):
    if tangents is None:
        return [None] * n
    leaves = jax.tree.leaves(tangents, is_leaf=lambda t: isinstance(t, SymbolicZero))
    # A tangent may be a Python number (jax.jvp(f, (0.7,), (1.0,))).
    return [
        None if isinstance(t, SymbolicZero) or jnp.result_type(t) == jax.dtypes.float0
        else jnp.asarray(t) for t in leaves
    ]


class _nested:
    """Installs several handlers for a block; the first argument is the innermost."""

    def __init__(self, *handlers):
        self.handlers = handlers

    def __enter__(self):
        self.token = _STACK.set(_STACK.get() + tuple(reversed(self.handlers)))

    def __exit__(self, *exc):
        _STACK.reset(self.token)


class _fresh_stack(_nested):
    """Replaces the whole stack: an expectation's sites never reach handlers outside it."""

    def __enter__(self):
        self.token = _STACK.set(tuple(reversed(self.handlers)))


def expectation(fn: Callable) -> Expectation:
    """Marks `fn` as an expectation program: its value is a random variable over its `pv.sample`s.

    Examples:
      >>> import jax, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def mean_square(mu):
      ...     return pv.sample("x", dist.Normal(mu, 1.0)) ** 2
      >>> keys = jax.random.split(jax.random.key(0), 20000)
      >>> grads = jax.vmap(lambda k: mean_square.grad(k, 1.0))(keys)
      >>> print(f"{grads.mean():.1f}")  # d/dmu (mu^2 + 1) = 2 mu
      2.0
    """
    if not callable(fn):
        raise TypeError(
            f"@pv.expectation decorates a function, got {shown(fn)}. Write @pv.expectation above "
            "def program(...): ... ."
        )
    return Expectation(fn)


def with_strategies(program: Expectation, strategies: Mapping[str, Strategy]) -> Expectation:
    """The same program with the strategy at each address matching a pattern replaced.

    Patterns are addresses as they appear in the program's trace, with ``*`` globs
    (``"enc/*"``). An exact address wins over a glob; among globs the first listed wins. Overrides
    apply even where the program names a strategy, and an outer `with_strategies` wins over an
    inner one. A learned baseline (`pv.learned_baseline`) cannot be given here, since its value
    is computed inside the program: attach it at the site.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def loss(theta):
      ...     b = pv.sample("b", dist.Bernoulli(probs=theta), strategy=pv.enum)
      ...     return jnp.where(b > 0, 0.0, -theta / 2.0)
      >>> mvd_loss = pv.with_strategies(loss, {"b": pv.mvd})
      >>> g = mvd_loss.grad(jax.random.key(1), 0.4)
    """
    if not isinstance(program, Expectation):
        raise TypeError(
            f"with_strategies needs a @pv.expectation program, got {type(program).__name__}."
        )
    if not isinstance(strategies, Mapping):
        raise TypeError(
            f"with_strategies: strategies is {shown(strategies)}, but it must be a dict from "
            'address patterns to strategies, e.g. {"enc/*": pv.reinforce}.'
        )
    for pattern, strategy in strategies.items():
        if not isinstance(pattern, str):
            raise AddressError(
                f"with_strategies: the pattern {pattern!r} is not a string; patterns are "
                'addresses with * globs, e.g. {"enc/*": pv.reinforce}.'
            )
        if not isinstance(strategy, Strategy):
            raise StrategyError(
                f"with_strategies: the strategy for {pattern!r} is {strategy!r}, not a gradient "
                "strategy. Use pv.reparam, pv.reinforce, pv.enum, pv.mvd, pv.leave_one_out or a "
                "pv.Strategy subclass."
            )
        if learned_field(strategy) is not None:
            raise StrategyError(
                f"with_strategies: the strategy for {pattern!r} holds a learned baseline, but "
                "the mapping is built outside the program, where the baseline's value (computed "
                "in the program from params) does not exist yet. Attach it at the site instead: "
                "pv.sample(address, d, strategy=pv.reinforce(baseline=pv.learned_baseline(b))), "
                "choosing it with a Python flag of the program if it varies; with_strategies "
                "can still switch that site to another strategy."
            )
    # Outer overrides are applied after (below) inner ones, so they win.
    return Expectation(program.fn, program.overrides + (dict(strategies),))


__all__ = ["Evaluation", "Expectation", "expectation", "with_strategies", "default_strategy"]
