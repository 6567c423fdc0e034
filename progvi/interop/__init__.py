"""Other libraries' models as progvi generative functions."""

from . import blackjax as blackjax
from .numpyro import ModelError as ModelError
from .numpyro import NumPyroModel as NumPyroModel
from .numpyro import numpyro as numpyro

__all__ = ["blackjax", "ModelError", "NumPyroModel", "numpyro"]
