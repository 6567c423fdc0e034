"""Reparameterization: differentiate through the sampler.

For a distribution whose draw is a differentiable function of its parameters and independent noise
(``has_rsample``), ``d/dθ E[f(x)] = E[f'(x) · dx/dθ]``. numpyro's Gamma, Beta and Dirichlet draw
with implicit reparameterization (Figurnov et al., 2018), so they are covered by the same rule.

References:
  Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
  Figurnov, Mohamed & Mnih, "Implicit Reparameterization Gradients", NeurIPS 2018.
"""

import dataclasses

import jax

from .strategy import Local, Strategy, require


@dataclasses.dataclass(frozen=True)
class Reparam(Strategy):
    """Pathwise gradient through ``dist.rsample``."""

    name = "reparam"

    def check(self, address, dist):
        require(
            dist.has_rsample, address, self, dist, "it has no reparameterized sampler",
            "Use pv.reinforce (any distribution), pv.enum (finite support) or pv.mvd.",
        )

    def local(self, key, dist, tangent):
        value, value_tangent = jax.jvp(lambda d: d.rsample(key), (dist,), (tangent,))
        return Local(value, value_tangent)


reparam = Reparam()
"""The pathwise strategy, the default for distributions with ``has_rsample``:
``pv.sample("z", d, strategy=pv.reparam)``."""
