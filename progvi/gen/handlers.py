"""Handlers that give `pv.sample` its meaning inside a `pv.gen` function body.

One handler is installed for one run of one body. It checks each address, records the choice,
and adds its log density to the score; the handlers differ only in where a value comes from:

* `Simulating`: drawn with a key derived from the address;
* `Assessing`: read from the given choices (`in_program=True`: nested calls use their
  in-program density);
* `Generating`: read from the constraints where given, drawn otherwise;
* `SimulatingInProgram`: drawn by the handlers below (the expectation program's strategies).

A site whose target is a `Call` runs the called function's own operation and records its
choices as a nested dict under the address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax.numpy as jnp
from numpyro.distributions import Distribution

from ..adev._compat import get_opaque_trace_state
from ..adev.chain import summing_out
from ..adev.errors import AddressError, ProgramError, StrategyError
from ..adev.handlers import Handler, Site, handle
from ..adev.validation import validated, validating
from .choices import check_finite, choice_value, extra, missing, site_key
from .distribution import DistributionFunction
from .errors import ChoiceError
from .generative_function import Call


class Prefixed(Handler):
    """Sends the sites of a nested call past its caller's handler, under ``address/``.

    The caller records the nested function's choices from the trace the nested function
    returns, so its own handler is skipped: the sites go to the handlers below the caller.
    """

    def __init__(self, below, address: str):
        self.below, self.address = below, address

    def sample(self, site, below):
        return self.below(dataclasses.replace(site, address=f"{self.address}/{site.address}"))


def add(total, term):
    return term if total is None else total + term


class Recorder(Handler):
    """Checks and records the choices of one run of a body; subclasses say where values come
    from."""

    validates = True  # whether leaf sites check their parameters in `pv.validation()`

    def __init__(self, gen_name: str):
        self.gen_name = gen_name
        self.choices: dict = {}
        self.score = None
        # The JAX trace the body runs in: a site traced in another one (a lax.cond branch, a
        # lax.scan body, a jax.vmap inside the body) would leak its tracer into the choices.
        self.trace_state = get_opaque_trace_state()

    def sample(self, site, below):
        address = site.address
        if get_opaque_trace_state() != self.trace_state:
            raise ProgramError(
                f"pv.sample({address!r}, ...) in {self.gen_name} is inside a JAX transformation "
                "that the body runs (lax.cond / lax.switch, lax.scan / fori_loop, jax.vmap, "
                "jax.jit, ...), so its choice would leak out of it as a tracer. In a @pv.gen "
                "body, sample outside JAX control flow: use the pv.vmap / pv.scan combinators "
                f"for repeated structure, a Python loop with addresses f\"{address}_{{i}}\", "
                "or, for a choice between branches, sample in both and select the value with "
                "jnp.where."
            )
        if "/" in address:
            raise AddressError(
                f"address {address!r} in {self.gen_name} contains '/', which separates the "
                "levels of nested addresses. Use another character, or sample a nested "
                "generative function at the first part."
            )
        if address in self.choices:
            raise AddressError(
                f"address {address!r} is sampled twice in {self.gen_name}. Give each "
                f"pv.sample its own address (f\"{address}_{{i}}\" in a Python loop), or use "
                "pv.vmap / pv.scan for repeated structure."
            )
        target = site.dist
        if isinstance(target, Call) and isinstance(target.gen_fn, DistributionFunction):
            target = target.gen_fn.dist(*target.args)  # a distribution's call is its one choice
        if isinstance(target, Call):
            if site.strategy is not None:
                raise StrategyError(
                    f"pv.sample({address!r}, {target.gen_fn.name}(...), strategy=...) in "
                    f"{self.gen_name}: a call has no strategy of its own. Choose strategies for "
                    f"its choices by address: pv.with_strategies(obj, {{'{address}/*': ...}})."
                )
            sub = self.nested_choices(address, target)
            try:
                choices, score, retval = self.call(address, target, sub, below)
            except ChoiceError as err:
                raise err.under(address) from None
        elif isinstance(target, Distribution):
            if self.validates and validating():
                target = validated(address, target, where=f"{self.gen_name}: sample site")
            choices, score = self.leaf(address, target, site.strategy, below)
            retval = choices
        else:
            raise TypeError(
                f"pv.sample({address!r}, ...) in {self.gen_name} got a "
                f"{type(target).__name__}; it takes a numpyro distribution or a call of a "
                "generative function, e.g. pv.sample('enc', encoder(x))."
            )
        self.choices[address] = choices
        self.score = add(self.score, score)
        return retval

    def leaf(self, address, dist, strategy, below):
        """(value, log density) of the choice at `address`."""
        raise NotImplementedError

    def nested_choices(self, address, call: Call):
        """The choices given for the nested call at `address`, if this handler reads any."""
        return None

    def call(self, address, call: Call, sub, below):
        """(choices, score, retval) of the nested call at `address`, given its choices `sub`."""
        raise NotImplementedError

    def total(self):
        return jnp.zeros((), jnp.result_type(float)) if self.score is None else self.score


def _log_prob(dist, value):
    return jnp.sum(dist.log_prob(value))


class Simulating(Recorder):
    def __init__(self, gen_name, key):
        super().__init__(gen_name)
        self.key = key

    def leaf(self, address, dist, strategy, below):
        value = dist.sample(site_key(self.key, address))
        return value, _log_prob(dist, value)

    def call(self, address, call, sub, below):
        return call.gen_fn.simulate(site_key(self.key, address), *call.args)


class Assessing(Recorder):
    def __init__(self, gen_name, given, in_program: bool = False):
        super().__init__(gen_name)
        if not isinstance(given, Mapping):
            raise TypeError(
                f"the choices of {gen_name} must be a dict from addresses to values, got "
                f"{type(given).__name__}."
            )
        self.given, self.in_program = given, in_program

    def _value(self, address):
        if address not in self.given:
            raise missing(address, self.gen_name)
        return self.given[address]

    def leaf(self, address, dist, strategy, below):
        if address not in self.given and summing_out(strategy):
            # The state of a `pv.scan` chain, summed out by the forward algorithm: the chain's
            # handler below gives the value being enumerated.
            value = below(Site(address, dist, strategy))
        else:
            value = choice_value(address, dist, self._value(address))
        log_density = _log_prob(dist, value)
        check_finite(address, log_density)
        return value, log_density

    def nested_choices(self, address, call):
        return _nested(self._value(address), address, call, self.gen_name)

    def call(self, address, call, sub, below):
        if self.in_program:
            with handle(Prefixed(below, address)):
                score, retval = call.gen_fn.density_in_program(sub, *call.args)
        else:
            score, retval = call.gen_fn.assess(sub, *call.args)
        return sub, score, retval

    def finish(self):
        """Raises if a value was given at an address the body never sampled."""
        for address in self.given:
            if address not in self.choices:
                raise extra(address, self.gen_name, self.choices)


class Generating(Recorder):
    def __init__(self, gen_name, key, constraints):
        super().__init__(gen_name)
        self.key, self.weight = key, None
        self.checker = Assessing(gen_name, constraints)

    def leaf(self, address, dist, strategy, below):
        if address not in self.checker.given:
            value = dist.sample(site_key(self.key, address))
            return value, _log_prob(dist, value)
        value, log_density = self.checker.leaf(address, dist, strategy, below)
        self.weight = add(self.weight, log_density)
        return value, log_density

    def nested_choices(self, address, call):
        return _nested(self.checker.given.get(address, {}), address, call, self.gen_name)

    def call(self, address, call, sub, below):
        trace, weight = call.gen_fn.generate(site_key(self.key, address), sub, *call.args)
        self.weight = add(self.weight, weight)
        return trace

    def finish(self):
        self.checker.choices = self.choices
        self.checker.finish()

    def total_weight(self):
        return jnp.zeros((), jnp.result_type(float)) if self.weight is None else self.weight


class SimulatingInProgram(Recorder):
    validates = False  # its sites reach the expectation program's own check

    def leaf(self, address, dist, strategy, below):
        value = below(Site(address, dist, strategy))
        return value, _log_prob(dist, value)

    def call(self, address, call, sub, below):
        with handle(Prefixed(below, address)):
            return call.gen_fn.simulate_in_program(*call.args)


def _nested(sub, address, call, gen_name):
    if not isinstance(sub, Mapping):
        raise ChoiceError(
            lambda a: f"the value given at {a!r} is a {type(sub).__name__}, but {gen_name} "
            f"samples a call of {call.gen_fn.name} there, whose choices are a dict. Give a "
            "dict of its choices.",
            address,
        )
    return sub
