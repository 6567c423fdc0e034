"""`compare_strategies`: the variance and cost of several gradient estimators of one objective."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..adev import AddressError, Expectation, with_strategies
from ..adev.addresses import match
from ..adev.keys import check_key
from ..adev.pinned import pinned_grad, site_groups

_HELD = 8  # held draws of the other sites per site in the per-site decomposition


@dataclasses.dataclass(frozen=True)
class CandidateStats:
    """One candidate estimator's row of a `StrategyComparison`.

    ``mean``, ``stderr`` and ``variance`` have the structure of the gradient: ``variance`` holds,
    per parameter leaf, the sum of its coordinates' variances; ``total_variance`` sums it over the
    leaves (the trace of the gradient's covariance). ``seconds`` is the time per gradient estimate,
    in the compiled batches (vmapped, up to 256 keys) that gave the estimates, and
    ``compile_seconds`` the time of the first batch, compiling included; ``work_variance`` is
    ``total_variance * seconds``: the variance of the average of the estimates one second buys is
    ``work_variance`` (lower is better). ``sites`` gives, for each top-level group of sample sites,
    the fraction of ``total_variance`` that varying its draws alone leaves, the others held:
    ``E[Var(g | other sites)] / Var(g)`` (a total-effect index; the fractions add up to 1 only when
    the sites' effects add). ``error`` is the largest ``|mean - exact| / stderr`` over the
    coordinates when an exact gradient was given (about 3 or below for an unbiased estimator), else
    None. ``focus_variance`` is, when `compare_strategies` was given a `focus` pattern, the variance
    that the draws of the sites matching it cause with the other sites' draws held (``E[Var(g |
    other sites)]`` summed over the coordinates), else None; ``score`` is the figure `best` ranks
    by: ``focus_variance`` (or ``total_variance``) × ``seconds``.
    """

    name: str
    program: Expectation
    mean: Any
    stderr: Any
    variance: Any
    total_variance: float
    seconds: float
    work_variance: float
    compile_seconds: float
    sites: Mapping[str, float]
    error: float | None
    focus_variance: float | None = None

    @property
    def score(self) -> float:
        variance = self.total_variance if self.focus_variance is None else self.focus_variance
        return variance * self.seconds


class StrategyComparison:
    """What `compare_strategies` returns: one `CandidateStats` per candidate, as a table.

    ``print(table)`` shows it as Markdown, ``table[name]`` is a row, ``table.best`` is the name of
    the candidate with the lowest variance × time (the variance from the `focus` sites, if
    given), ``table.plot()`` draws it with matplotlib.
    """

    def __init__(self, rows: Sequence[CandidateStats], num_estimates: int,
                 focus: str | None = None):
        self.rows = tuple(rows)
        self.num_estimates = num_estimates
        self.focus = focus

    def __getitem__(self, name: str) -> CandidateStats:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no candidate named {name!r}; the candidates are {self.names}.")

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    @property
    def best(self) -> str:
        """The name of the candidate with the lowest `CandidateStats.score` (variance × time)."""
        return min(self.rows, key=lambda row: row.score).name

    def to_markdown(self) -> str:
        """The table in Markdown: one line per candidate, best (lowest variance × time) first."""
        best = self[self.best].score
        exact = any(row.error is not None for row in self.rows)
        head = ["candidate", "variance"]
        head += [f"variance from `{self.focus}`"] if self.focus is not None else []
        head += ["time / estimate", "variance × time", "× best"]
        head += ["max \\|z\\|"] if exact else []
        head += ["variance by site (fraction)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in sorted(self.rows, key=lambda row: row.score):
            ratio = row.score / best if best > 0 else (math.inf if row.score > 0 else 1.0)
            cells = [row.name, f"{row.total_variance:.4g}"]
            cells += [f"{row.focus_variance:.4g}"] if self.focus is not None else []
            cells += [_seconds(row.seconds), f"{row.score:.3g}",
                      "1" if ratio == 1 else f"{ratio:.3g}"]
            cells += [("—" if row.error is None else f"{row.error:.2f}")] if exact else []
            cells += [", ".join(f"{k}: {v:.2f}" for k, v in row.sites.items()) or "—"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"StrategyComparison({self.num_estimates} estimates each)\n{self.to_markdown()}"

    def plot(self, ax=None):
        """Bars of each candidate's variance and variance × time (log scale); returns the figure.

        With `ax` (a pair of matplotlib axes) it draws on them instead of a new figure.
        """
        try:
            import matplotlib.pyplot as plt
            from matplotlib.ticker import NullFormatter
        except ImportError as err:
            raise ImportError(
                "StrategyComparison.plot needs matplotlib: pip install matplotlib (or "
                '"progvi[examples]").'
            ) from err
        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(9, 0.5 * len(self.rows) + 1.8))
        else:
            fig = ax[0].figure
        rows = sorted(self.rows, key=lambda row: row.score, reverse=True)
        names = [row.name for row in rows]
        which = "gradient variance (trace)" if self.focus is None else (
            f"variance from {self.focus}")
        for axis, values, label in (
            (ax[0], [row.score / row.seconds for row in rows], which),
            (ax[1], [row.score for row in rows], "variance × seconds per estimate"),
        ):
            axis.barh(names, [max(v, 1e-30) for v in values], color="tab:blue")
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())  # labels only at the decades
            axis.set_xlabel(label)
        ax[0].set_ylabel("candidate")
        ax[1].set_yticklabels([])
        ax[0].set_title("variance")
        ax[1].set_title("variance × time (lower is better)")
        fig.tight_layout()
        return fig


def compare_strategies(
    key: jax.Array,
    objective: Expectation,
    args: tuple,
    candidates: Mapping[str, Mapping[str, Any] | Expectation],
    *,
    num_estimates: int = 1000,
    argnums: int | tuple[int, ...] = 0,
    exact: Any = None,
    per_site: bool = True,
    focus: str | None = None,
) -> StrategyComparison:
    """The mean, variance and cost of the gradient estimate of each candidate estimator.

    Each candidate is a mapping for `pv.with_strategies` (applied to `objective`) or a whole
    `pv.Expectation` (another objective of the same arguments). For each, `num_estimates` gradient
    estimates (with respect to ``args[argnums]``) from independent keys give the mean, its standard
    error and the variance per parameter leaf; the time per estimate is that of the compiled batches
    of estimates (vmapped over up to 256 keys; the median of several timed runs after the first,
    which compiles); and, with `per_site`, each top-level group of sample sites gets the fraction of
    the variance its draws cause (see `CandidateStats`). That costs ``num_estimates / 2`` more
    estimates per group; sites inside a loop, plate or nested call count as that construct's group.


    Variance × time is the figure to compare: the variance of an average of estimates over a
    fixed compute budget. The time is measured on this machine and device as they are now.
    With `focus` (an address pattern, ``*`` globs as in `pv.with_strategies`), the variance
    ranked is the part that the matching sites' draws cause, the others held: the figure to
    compare when the candidates differ at those sites only, and other sites' variance would
    drown the difference (``num_estimates`` more estimates per candidate).

    Args:
      key: a `jax.random` key.
      objective: the `@pv.expectation` objective whose gradient is estimated.
      args: the tuple of its arguments.
      candidates: a dict from a name to a `with_strategies` mapping or to an objective.
      num_estimates: gradient estimates per candidate (at least 2).
      argnums: which arguments to differentiate, as in `Expectation.grad`.
      exact: the exact gradient, if known (structure of the gradient): fills ``error``.
      per_site: whether to decompose the variance by site.
      focus: an address pattern whose sites' share of the variance ranks the candidates.

    Examples:
      >>> import jax, jax.numpy as jnp, numpyro.distributions as dist, progvi as pv
      >>> @pv.expectation
      ... def loss(theta):
      ...     b = pv.sample("b", dist.Bernoulli(logits=theta))
      ...     return (b - 0.3) ** 2
      >>> table = pv.compare_strategies(
      ...     jax.random.key(0), loss, (0.5,),
      ...     {"reinforce": {"b": pv.reinforce}, "mvd": {"b": pv.mvd}, "enum": {"b": pv.enum}},
      ...     num_estimates=200)
      >>> table.best, table["enum"].total_variance
      ('enum', 0.0)
    """
    check_key(key, "compare_strategies", "pv.compare_strategies(jax.random.key(0), objective, "
              "args, candidates)")
    if not isinstance(objective, Expectation):
        raise TypeError(
            f"compare_strategies needs a @pv.expectation objective, got "
            f"{type(objective).__name__}."
        )
    if not isinstance(args, tuple):
        raise TypeError(
            f"compare_strategies: args is a {type(args).__name__}, but it must be the tuple of "
            "the objective's arguments, e.g. (params,) or (params, data)."
        )
    if not isinstance(candidates, Mapping) or not candidates:
        raise TypeError(
            "compare_strategies: candidates must be a non-empty dict from a name to a "
            'with_strategies mapping or an objective, e.g. {"score": {"z": pv.reinforce}, '
            '"reparam": {"z": pv.reparam}}.'
        )
    if not isinstance(num_estimates, int) or num_estimates < 2:
        raise ValueError(
            f"compare_strategies: num_estimates={num_estimates!r}; a variance needs an int of "
            "at least 2 estimates."
        )
    rows = []
    for name, candidate in candidates.items():
        program = _program(objective, name, candidate)
        key, sub = jax.random.split(key)
        rows.append(_measure(sub, name, program, args, num_estimates, argnums, exact, per_site,
                             focus))
    return StrategyComparison(rows, num_estimates, focus)


def _program(objective, name, candidate) -> Expectation:
    if isinstance(candidate, Expectation):
        return candidate
    if isinstance(candidate, Mapping):
        return with_strategies(objective, candidate)
    raise TypeError(
        f"compare_strategies: the candidate {name!r} is a {type(candidate).__name__}; each "
        "candidate is a with_strategies mapping (e.g. {'z': pv.reinforce}) or a "
        "@pv.expectation objective."
    )


def _measure(key, name, program, args, n, argnums, exact, per_site, focus) -> CandidateStats:
    grad_key, site_key, focus_key = jax.random.split(key, 3)
    keys = jax.random.split(grad_key, n)
    chunk = _chunk(n)
    batch = _batch_moments(lambda k: program.grad(k, *args, argnums=argnums))
    start = time.perf_counter()
    jax.block_until_ready(batch(keys[:chunk]))
    compile_seconds = time.perf_counter() - start  # and one batch
    mean, m2 = _combine(batch, keys, chunk)
    var = jax.tree.map(lambda s: s / (n - 1), m2)
    _check_finite(name, mean, var)
    leaf_var = jax.tree.map(lambda v: float(np.sum(v)), var)
    total = float(sum(jax.tree.leaves(leaf_var)))
    stderr = jax.tree.map(lambda v: np.sqrt(v / n), var)
    seconds = _time(lambda: batch(keys[:chunk])) / chunk
    sites = _sites(site_key, program, args, argnums, n // 2, total) if per_site else {}
    error = None if exact is None else _error(mean, stderr, exact)
    focused = None
    if focus is not None:
        groups = [g for g in site_groups(program, *args)
                  if any(match({focus: True}, a) for a in g.addresses)]
        if not groups:
            raise AddressError(
                f"compare_strategies: focus={focus!r} matches no sample site of the candidate "
                f"{name!r}; its sites are {_addresses(program, args)}."
            )
        focused = _held_variance(focus_key, program, args, argnums, n, groups)
    return CandidateStats(name, program, mean, stderr, leaf_var, total, seconds, total * seconds,
                          compile_seconds, sites, error, focused)


def _batch_moments(estimate):
    """A compiled function of a batch of keys: the per-coordinate mean of `estimate` over them
    and the sum of squared deviations from it."""

    @jax.jit
    def moments(ks):
        grads = jax.vmap(estimate)(ks)
        mean = jax.tree.map(lambda g: jnp.mean(g, 0), grads)
        return mean, jax.tree.map(lambda g, m: jnp.sum((g - m) ** 2, 0), grads, mean)

    return moments


def _combine(batch, keys, chunk):
    """The mean and summed squared deviations over all `keys`, batch by batch, in float64."""
    total_n, mean, m2 = 0, None, None
    for start in range(0, len(keys), chunk):
        cm, cm2 = jax.tree.map(lambda x: np.asarray(x, np.float64),
                               batch(keys[start:start + chunk]))
        if mean is None:
            total_n, mean, m2 = chunk, cm, cm2
            continue
        # Chan et al.'s pairwise update of the mean and the sum of squared deviations.
        both = total_n + chunk
        delta = jax.tree.map(lambda a, b: b - a, mean, cm)
        mean = jax.tree.map(lambda a, d, w=chunk / both: a + d * w, mean, delta)
        w = total_n * chunk / both
        m2 = jax.tree.map(lambda a, b, d, w=w: a + b + d**2 * w, m2, cm2, delta)
        total_n = both
    return mean, m2


def _chunk(n: int) -> int:
    """Equal batches, one compilation: the largest divisor of n up to 256, or all n at once when
    it has none from 32 up (a prime, say)."""
    best = max(d for d in range(1, min(n, 256) + 1) if n % d == 0)
    return best if best >= 32 or best == n else n


def _time(call, target=0.2, repeats=5):
    """The median over `repeats` rounds of the time of one `call` (each round ≥ target/repeats
    seconds of calls)."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            out = call()
        jax.block_until_ready(out)
        elapsed = time.perf_counter() - start
        if elapsed >= target / repeats or calls >= 1 << 16:
            break
        calls *= 2
    times = [elapsed / calls]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            out = call()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls)
    return float(np.median(times))


def _sites(key, program, args, argnums, n, total) -> dict[str, float]:
    groups = site_groups(program, *args)
    if len(groups) <= 1 or total == 0.0:
        # One group: varying its draws is varying all of them.
        return {group.label: (1.0 if total > 0 else 0.0) for group in groups}
    fractions = {}
    for group in groups:
        key, sub = jax.random.split(key)
        fractions[group.label] = _held_variance(sub, program, args, argnums, n, [group]) / total
    return fractions


def _held_variance(key, program, args, argnums, n, groups) -> float:
    """``E[Var(g | the sites outside groups)]`` summed over the coordinates, from about n
    estimates: `_HELD` draws of the other sites, each with n / `_HELD` draws of `groups`."""
    grad = pinned_grad(program, frozenset(g.salt for g in groups), argnums)
    per_held = max(2, n // _HELD)

    @jax.jit
    def within(held, varied):
        grads = jax.vmap(lambda h, ks: jax.vmap(lambda k: grad(k, h, *args))(ks))(held, varied)
        return sum(jnp.sum(jnp.mean(jnp.var(g, axis=1, ddof=1), 0))
                   for g in jax.tree.leaves(grads))

    held_key, varied_key = jax.random.split(key)
    held = jax.random.split(held_key, _HELD)
    varied = jax.random.split(varied_key, (_HELD, per_held))
    return float(within(held, varied))


def _addresses(program, args) -> list[str]:
    return [a for g in site_groups(program, *args) for a in g.addresses]


def _check_finite(name, mean, var):
    for leaf in jax.tree.leaves((mean, var)):
        if not np.all(np.isfinite(leaf)):
            raise FloatingPointError(
                f"compare_strategies: the candidate {name!r} gave non-finite gradient estimates "
                "(NaN or inf). Check the objective at these arguments with pv.validation(), or "
                "give that candidate a strategy the sites support."
            )


def _error(mean, stderr, exact) -> float:
    structure = jax.tree.structure(mean)
    if jax.tree.structure(exact) != structure:
        raise ValueError(
            f"compare_strategies: exact must have the structure of the gradient, {structure}; "
            f"it has {jax.tree.structure(exact)}."
        )
    worst = 0.0
    for m, s, e in zip(jax.tree.leaves(mean), jax.tree.leaves(stderr), jax.tree.leaves(exact),
                       strict=True):
        e = np.asarray(e, np.float64)
        floor = 1e-6 * (1.0 + np.abs(e))  # an exact estimator: zero variance
        worst = max(worst, float(np.max(np.abs(m - e) / np.maximum(s, floor))))
    return worst


def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.2f} s"


__all__ = ["CandidateStats", "StrategyComparison", "compare_strategies"]
