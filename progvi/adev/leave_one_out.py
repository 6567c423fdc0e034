"""Leave-one-out REINFORCE over K draws of one site.

Draw ``x_1..x_K`` independently and run the rest of the program on each. The estimate of the
expectation is the mean of the K results ``f_k``; its gradient is

$$
    \\frac{1}{K} \\sum_k \\Big[ f'_k + \\big(f_k - \\tfrac{1}{K-1} \\sum_{j \\ne k} f_j\\big)
    \\nabla \\log p(x_k) \\Big],
$$

unbiased because each baseline is independent of the draw it multiplies.

References:
  Kool, van Hoof & Welling, "Buy 4 REINFORCE samples, get a baseline for free!", ICLR DeepRL
  workshop 2019.
  Mnih & Rezende, "Variational inference for Monte Carlo objectives", ICML 2016.
"""

import dataclasses

import jax
import jax.numpy as jnp

from .errors import StrategyError
from .strategy import Strategy


@dataclasses.dataclass(frozen=True)
class LeaveOneOut(Strategy):
    """REINFORCE over ``num_samples`` draws, each with the mean of the others as baseline."""

    num_samples: int = 4
    name = "leave_one_out"

    def check(self, address, dist):
        if not (isinstance(self.num_samples, int) and self.num_samples >= 2):
            raise StrategyError(
                f"sample site {address!r}: pv.leave_one_out needs num_samples >= 2, got "
                f"{self.num_samples!r}. Write pv.leave_one_out(num_samples=4)."
            )

    def jvp(self, key, dist, tangent, kont):
        k = self.num_samples
        xs = jax.lax.stop_gradient(jax.vmap(dist.sample)(jax.random.split(key, k)))
        rets, drets = jax.vmap(kont.dual)(xs)
        score = jax.vmap(
            lambda x: jax.jvp(lambda d: jnp.sum(d.log_prob(x)), (dist,), (tangent,))[1]
        )(xs)
        others = (jnp.sum(rets, 0) - rets) / (k - 1)
        score = score.reshape((k,) + (1,) * (rets.ndim - 1))
        return jnp.mean(rets, 0), jnp.mean(drets + (rets - others) * score, 0)


leave_one_out = LeaveOneOut()
"""REINFORCE over `num_samples` draws with leave-one-out baselines (4 by default); call it for
another number: ``pv.leave_one_out(num_samples=8)``."""
