"""F-SAM (Li et al., CVPR 2024, Algorithm 1): ascend along g − σ·m, m an EMA of past gradients.

As in the official code, the first update is plain SAM and starts the EMA at g; afterwards the
ascent direction is g − σ·m_{t−1} and the EMA is fed the raw minibatch gradient at θ:
m_t = λ·m_{t−1} + (1 − λ)·g_t. ``adaptive=True`` gives F-ASAM. σ and λ are per group (the official
code keeps one value for all; a group that does not set them uses the constructor's).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..context import Update
from ..engine import SharpnessAware
from ..hyper import COMMON, Hyper
from ..registry import register


@register
class FSAM(SharpnessAware):
    """Friendly SAM: perturb along the stochastic-noise part of the gradient."""

    name = "fsam"
    hyperparameters = (
        *COMMON,
        Hyper("sigma", float, 1.0, "σ: how much of the gradient EMA is removed from the ascent direction", low=0.0,
              per_group=True),
        Hyper("lam", float, 0.9, "λ: decay of the gradient EMA (0.6 CIFAR, 0.95 ImageNet in the paper)",
              low=0.0, high=1.0, high_open=True, per_group=True),
    )

    def prepare(self, ctx: Update) -> None:
        grads, ema = ctx.grads(), ctx.saved("ema")
        if ema is None:
            ctx.stage(state={"ema": torch._foreach_mul(grads, 1.0)})
            return
        new: list[Tensor] = []
        for span in ctx.spans:
            part = torch._foreach_mul(span.of(ema), span.hp["lam"])
            torch._foreach_add_(part, span.of(grads), alpha=1.0 - span.hp["lam"])
            new += part
        ctx.stage(state={"ema": new})
        ctx.kept["ema"] = ema

    def ascent_direction(self, ctx: Update, i: int) -> list[Tensor] | None:
        ema = ctx.kept.get("ema")
        if ema is None:
            return None
        grads, direction = ctx.grads(), list[Tensor]()
        for span in ctx.spans:
            direction += torch._foreach_add(span.of(grads), span.of(ema), alpha=-span.hp["sigma"])
        return direction
