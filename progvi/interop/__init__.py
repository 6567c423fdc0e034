"""Other libraries' models as progvi generative functions."""

from .numpyro import ModelError as ModelError
from .numpyro import NumPyroModel as NumPyroModel
from .numpyro import numpyro as numpyro
from .tfp import TFPDistribution as TFPDistribution
from .tfp import TFPError as TFPError
from .tfp import tfp as tfp

__all__ = ["ModelError", "NumPyroModel", "TFPDistribution", "TFPError", "numpyro", "tfp"]
