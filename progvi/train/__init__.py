"""Training: `fit`, `make_step`, and the state of stateful gradient estimators."""

from .checkpoint import latest_step as latest_step
from .estimators import Estimator as Estimator
from .estimators import MovingAverageState as MovingAverageState
from .estimators import learned_baseline as learned_baseline
from .estimators import moving_average_baseline as moving_average_baseline
from .fit import FitResult as FitResult
from .fit import NonFiniteError as NonFiniteError
from .fit import fit as fit
from .step import TrainState as TrainState
from .step import TrainStep as TrainStep
from .step import make_step as make_step

__all__ = [
    "Estimator",
    "FitResult",
    "MovingAverageState",
    "NonFiniteError",
    "TrainState",
    "TrainStep",
    "fit",
    "latest_step",
    "learned_baseline",
    "make_step",
    "moving_average_baseline",
]
