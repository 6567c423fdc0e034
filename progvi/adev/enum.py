"""Enumeration: sum the rest of the program over a finite support.

``E[f(x)] = Σ_k p_k f(k)`` and ``d/dθ E[f(x)] = Σ_k (dp_k f(k) + p_k df(k))``: exact in this site
(the estimate's variance comes only from later sites). The sequential form runs the continuation
once per value; the parallel form vmaps it over the support.
"""

import dataclasses

import jax
import jax.numpy as jnp

from .strategy import Strategy, require


def support(dist, dtype):
    """The values of a scalar discrete distribution's support, cast to the site's dtype."""
    return jnp.asarray(dist.enumerate_support(expand=False), dtype).reshape(-1)


@dataclasses.dataclass(frozen=True)
class Enum(Strategy):
    """Exact sum over the support; ``parallel=True`` vmaps the continuation over the values."""

    parallel: bool = False
    name = "enum"

    def check(self, address, dist):
        require(
            dist.has_enumerate_support, address, self, dist, "its support is not finite",
            "Use pv.reparam or pv.reinforce for it.",
        )
        require(
            dist.batch_shape == () and dist.event_shape == (), address, self, dist,
            f"it has batch shape {dist.batch_shape} and event shape {dist.event_shape} (the joint "
            "support grows exponentially)",
            "Give each element its own address, or vmap the whole estimate over datapoints.",
        )

    def jvp(self, key, dist, tangent, kont):
        values = support(dist, jnp.result_type(dist.sample(key)))

        def weighted(value):
            prob, dprob = jax.jvp(lambda d: jnp.exp(d.log_prob(value)), (dist,), (tangent,))
            ret, dret = kont.dual(value)
            return prob * ret, dprob * ret + prob * dret

        if self.parallel:
            rets, drets = jax.vmap(weighted)(values)
            return jnp.sum(rets, 0), jnp.sum(drets, 0)
        terms = [weighted(v) for v in values]
        return sum(r for r, _ in terms), sum(d for _, d in terms)


enum = Enum()
enum_parallel = Enum(parallel=True)
