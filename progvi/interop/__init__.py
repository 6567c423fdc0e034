"""Other libraries' models as progvi generative functions."""

from . import blackjax as blackjax
from ._genjax_distributions import GenJAXError as GenJAXError
from .genjax import GenJAXFunction as GenJAXFunction
from .genjax import choices_from_genjax as choices_from_genjax
from .genjax import choices_to_genjax as choices_to_genjax
from .genjax import genjax as genjax
from .genjax import trace_from_genjax as trace_from_genjax
from .numpyro import ModelError as ModelError
from .numpyro import NumPyroModel as NumPyroModel
from .numpyro import numpyro as numpyro
from .numpyro_chain import numpyro_chain as numpyro_chain
from .posterior import posterior_samples as posterior_samples
from .posterior import to_arviz as to_arviz
from .tfp import TFPDistribution as TFPDistribution
from .tfp import TFPError as TFPError
from .tfp import tfp as tfp

__all__ = [
    "GenJAXError",
    "GenJAXFunction",
    "ModelError",
    "NumPyroModel",
    "TFPDistribution",
    "TFPError",
    "blackjax",
    "choices_from_genjax",
    "choices_to_genjax",
    "genjax",
    "numpyro",
    "numpyro_chain",
    "posterior_samples",
    "tfp",
    "to_arviz",
    "trace_from_genjax",
]
