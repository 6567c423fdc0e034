"""Families built by inference (`marginal`, `normalize`) and the objective library."""

from .marginal import Marginal as Marginal
from .marginal import marginal as marginal
from .normalize import Normalize as Normalize
from .normalize import normalize as normalize
