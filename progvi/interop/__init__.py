"""Other libraries' models as progvi generative functions."""

from .numpyro import ModelError as ModelError
from .numpyro import NumPyroModel as NumPyroModel
from .numpyro import numpyro as numpyro
from .numpyro_chain import numpyro_chain as numpyro_chain

__all__ = ["ModelError", "NumPyroModel", "numpyro", "numpyro_chain"]
