"""BlackJAX in progvi: MCMC kernels for rejuvenation, energy-model sampling, NUTS references.

BlackJAX is imported when a kernel first runs; without it the call says which extra to install
(``pip install "progvi[blackjax]"``).
"""

from .energy import EnergySamples as EnergySamples
from .energy import sample_energy as sample_energy
from .kernels import Kernel as Kernel
from .kernels import hmc as hmc
from .kernels import mala as mala
from .kernels import nuts as nuts
from .reference import NutsReference as NutsReference
from .reference import nuts_reference as nuts_reference

__all__ = [
    "EnergySamples", "Kernel", "NutsReference", "hmc", "mala", "nuts", "nuts_reference",
    "sample_energy",
]
