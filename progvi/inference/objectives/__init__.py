"""The objective library: variational objectives as functions called inside expectation programs.

Each objective takes ``(model, guide, obs, [num_particles, ...], model_args=(),
guide_args=())`` and returns one scalar estimate; the program that calls it is differentiated
by ADEV, so the choices' strategies decide the gradient estimator.
"""

from .elbo import elbo as elbo
from .elbo import elbo_stl as elbo_stl
from .errors import ObjectiveError as ObjectiveError
from .forward_kl import forward_kl as forward_kl
from .iwae import iwae as iwae
from .iwae import iwae_dreg as iwae_dreg
from .renyi import renyi as renyi
from .rws import rws as rws
from .rws import wake_p as wake_p
from .rws import wake_q as wake_q
from .vimco import vimco as vimco

__all__ = [
    "ObjectiveError",
    "elbo",
    "elbo_stl",
    "forward_kl",
    "iwae",
    "iwae_dreg",
    "renyi",
    "rws",
    "vimco",
    "wake_p",
    "wake_q",
]
