"""BlackJAX in progvi: MCMC kernels for rejuvenation, energy-model sampling, NUTS references.

BlackJAX is imported when a kernel first runs; without it the call says which extra to install
(``pip install "progvi[blackjax]"``).
"""

from .kernels import Kernel as Kernel
from .kernels import hmc as hmc
from .kernels import mala as mala
from .kernels import nuts as nuts

__all__ = ["Kernel", "hmc", "mala", "nuts"]
