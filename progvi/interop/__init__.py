"""Other libraries' models as progvi generative functions."""

from .numpyro import ModelError as ModelError
from .numpyro import NumPyroModel as NumPyroModel
from .numpyro import numpyro as numpyro

__all__ = ["ModelError", "NumPyroModel", "numpyro"]
