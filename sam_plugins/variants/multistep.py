"""Multi-step combinations of the XSAM paper (§5.3), all rescaled to ‖g_k‖.

MSAM Σ_{i=1..k} g_i, MSAM+ Σ_{i=0..k} g_i, LSAM Σ_{i=1..k} g_i/‖g_i‖, LSAM+ Σ_{i=0..k} g_i/‖g_i‖.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..context import Update
from ..engine import SharpnessAware
from ..hyper import COMMON, with_defaults
from ..registry import register
from ..tensors import global_norm, to_host


class _Summed(SharpnessAware):
    include_first: ClassVar[bool] = False
    normalize: ClassVar[bool] = False
    hyperparameters = with_defaults(COMMON, steps=2)

    def observe(self, ctx: Update, i: int) -> None:
        if i == 0 and not self.include_first:
            return
        grads, norm = ctx.grads(), ctx.norms[i]
        weight = (1.0 / norm if norm > 0 else 0.0) if self.normalize else 1.0
        total = ctx.kept.get("sum")
        if total is None:
            ctx.kept["sum"] = grads
            if weight != 1.0:
                torch._foreach_mul_(grads, weight)
        else:
            torch._foreach_add_(total, grads, alpha=weight)

    def combine(self, ctx: Update) -> None:
        total = ctx.kept["sum"]
        (norm,) = to_host(global_norm(total))
        torch._foreach_mul_(total, ctx.norms[self.hp.steps] / norm if norm > 0 else 0.0)
        for p, t in zip(ctx.params, total):
            p.grad = t


@register
class MSAM(_Summed):
    """Σ_{i=1..k} g_i (Kim et al. 2023), rescaled to ‖g_k‖."""

    name = "msam"


@register
class MSAMPlus(_Summed):
    """Σ_{i=0..k} g_i, rescaled to ‖g_k‖."""

    name = "msamplus"
    include_first = True


@register
class LSAM(_Summed):
    """Σ_{i=1..k} g_i/‖g_i‖ (Mordido et al. 2024), rescaled to ‖g_k‖."""

    name = "lsam"
    normalize = True


@register
class LSAMPlus(_Summed):
    """Σ_{i=0..k} g_i/‖g_i‖, rescaled to ‖g_k‖."""

    name = "lsamplus"
    include_first = True
    normalize = True
