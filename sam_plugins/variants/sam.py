"""SAM (Foret et al. 2021; ``steps=k`` gives multi-step SAM) and ASAM (Kwon et al. 2021)."""

from __future__ import annotations

from ..engine import SharpnessAware
from ..hyper import COMMON, with_defaults
from ..registry import register


@register
class SAM(SharpnessAware):
    """Update with g_k, the gradient after k normalized ascent steps of ρ/k each."""

    name = "sam"
    hyperparameters = COMMON


@register
class ASAM(SharpnessAware):
    """Adaptive SAM: ε = ρ·T²g/‖Tg‖ with T = |w| + η on every parameter with a gradient.

    The official code scales only tensors named ``weight``; an optimizer sees no names, so put biases and
    normalization parameters in a param group with ``adaptive=False`` for that split (T = 1 there; the
    norm ‖Tg‖ stays global over all groups).
    """

    name = "asam"
    hyperparameters = with_defaults(COMMON, rho=0.5, adaptive=True)
