"""Generative functions: `@gen`, traces, choice maps, simulate / assess / generate, combinators."""

from .choices import merge as merge
from .distribution import DistributionFunction as DistributionFunction
from .distribution import distribution as distribution
from .errors import ChoiceError as ChoiceError
from .errors import CombinatorError as CombinatorError
from .function import GenFunction as GenFunction
from .function import gen as gen
from .generative_function import Call as Call
from .generative_function import GenerativeFunction as GenerativeFunction
from .generative_function import density as density
from .generative_function import simulate as simulate
from .scan import Scan as Scan
from .scan import scan as scan
from .trace import Trace as Trace
from .vmap import Vmap as Vmap
from .vmap import vmap as vmap

__all__ = [
    "Call",
    "ChoiceError",
    "CombinatorError",
    "DistributionFunction",
    "GenFunction",
    "GenerativeFunction",
    "Scan",
    "Trace",
    "Vmap",
    "density",
    "distribution",
    "gen",
    "merge",
    "scan",
    "simulate",
    "vmap",
]
