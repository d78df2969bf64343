"""Sharpness-aware optimizers (SAM, ASAM, XSAM, X-SAM, F-SAM, MSAM, LSAM, WSAM, GSAM) on one engine.

>>> opt = sam_plugins.create("xsam", model.parameters(), base="sgd", lr=0.05, rho=0.15, rho_m=0.3)
>>> def closure():
...     loss = criterion(model(x), y)
...     opt.backward(loss)
...     return loss
>>> loss = opt.step(closure)
"""

from .bases import BASES
from .context import SkipUpdate, Update
from .distributed import Distributed
from .engine import SharpnessAware
from .hyper import COMMON, Hyper, with_defaults
from .loop import update
from .registry import available, create, get, on_register, register
from .schedules import RhoFollowsLR
from .variants.evsam import EVSAM
from .variants.fsam import FSAM
from .variants.mixing import GSAM, WSAM
from .variants.multistep import LSAM, MSAM, LSAMPlus, MSAMPlus
from .variants.sam import ASAM, SAM
from .variants.xsam import XSAM

__all__ = [
    "ASAM", "BASES", "COMMON", "EVSAM", "FSAM", "GSAM", "LSAM", "MSAM", "SAM", "WSAM", "XSAM", "Distributed", "Hyper",
    "LSAMPlus", "MSAMPlus", "RhoFollowsLR", "SharpnessAware", "SkipUpdate", "Update", "available", "create", "get",
    "on_register", "register", "update", "with_defaults",
]
__version__ = "0.1.0"
