"""Families built by inference (`marginal`, `normalize`) and the objective library."""

from .marginal import Marginal as Marginal
from .marginal import marginal as marginal
from .normalize import Normalize as Normalize
from .normalize import normalize as normalize
from .objectives import ObjectiveError as ObjectiveError
from .objectives import elbo as elbo
from .objectives import elbo_stl as elbo_stl
from .objectives import forward_kl as forward_kl
from .objectives import iwae as iwae
from .objectives import iwae_dreg as iwae_dreg
from .objectives import renyi as renyi
from .objectives import rws as rws
from .objectives import vimco as vimco
from .objectives import wake_p as wake_p
from .objectives import wake_q as wake_q
