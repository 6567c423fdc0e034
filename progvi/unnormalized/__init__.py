"""Unnormalized (energy) models: log-partition estimators and noise-contrastive baselines.

The log-expectation estimators are top-level names: `pv.plug_in`, `pv.compositional`,
`pv.tangent_bound`.
"""

from .compositional import Compositional as Compositional
from .compositional import CompositionalState as CompositionalState
from .exponential import ence as ence
from .likelihood import nll as nll
from .noise_contrastive import nce as nce
from .plug_in import PlugIn as PlugIn
from .ranking import ranking_nce as ranking_nce
from .tangent_bound import TangentBound as TangentBound

__all__ = [
    "Compositional",
    "CompositionalState",
    "PlugIn",
    "TangentBound",
    "ence",
    "nce",
    "nll",
    "ranking_nce",
]
