"""Other libraries' models as progvi generative functions."""

from .numpyro import ModelError as ModelError
from .numpyro import NumPyroModel as NumPyroModel
from .numpyro import numpyro as numpyro
from .posterior import posterior_samples as posterior_samples
from .posterior import to_arviz as to_arviz

__all__ = ["ModelError", "NumPyroModel", "numpyro", "posterior_samples", "to_arviz"]
