"""Variants that mix the gradient at θ (g_0) into the update: WSAM and GSAM."""

from __future__ import annotations

from typing import Any

import torch

from ..engine import COMMON, SharpnessAware, Update
from ..hyper import Hyper
from ..registry import register
from ..tensors import polarized_cosine_


class _KeepsFirstGradient(SharpnessAware):
    def _observe(self, ctx: Update, i: int) -> None:
        if i == 0:
            self._keep_grads(ctx, "g0")


@register
class WSAM(_KeepsFirstGradient):
    """Weighted SAM (Yue et al. 2023): update with (1 − β)·g_0 + β·g_k."""

    name = "wsam"
    hyperparameters = (
        *COMMON,
        Hyper("beta", float, 0.9, "weight β of the perturbed gradient in (1 − β)·g_0 + β·g_k", low=0.0),
    )

    def _combine(self, ctx: Update) -> bool:
        grads = ctx.grads()
        torch._foreach_mul_(grads, self.hp.beta)
        torch._foreach_add_(grads, ctx.kept["g0"], alpha=1.0 - self.hp.beta)
        return True


@register
class GSAM(_KeepsFirstGradient):
    """Surrogate-gap guided SAM (Zhuang et al. 2022): g_k − a·(g_0 − proj_{g_k} g_0).

    ρ follows the learning rate of the first param group linearly, from ``rho`` at the initial lr
    down to ``rho_min`` at ``lr_min``, as in the paper's schedule.
    """

    name = "gsam"
    hyperparameters = (
        *COMMON,
        Hyper("alpha", float, 0.4, "strength a of the ascent along the part of g_0 orthogonal to g_k", low=0.0),
        Hyper("rho_min", float, 0.0, "ρ reached when the learning rate reaches lr_min", low=0.0),
        Hyper("lr_min", float, 0.0, "learning rate at which ρ reaches rho_min", low=0.0),
    )

    def _validate(self) -> None:
        if self.hp.rho_min > self.hp.rho:
            raise ValueError(f"GSAM: rho_min={self.hp.rho_min!r} is invalid; "
                             f"allowed: a float in [0, rho={self.hp.rho!r}]")

    def _initial_scalars(self) -> dict[str, Any]:
        group = self.param_groups[0]
        return {"lr_max": float(group.get("initial_lr", group["lr"]))}

    def _rho(self) -> float:
        lr, lr_max, lr_min = float(self.param_groups[0]["lr"]), self.scalars["lr_max"], self.hp.lr_min
        if lr_max <= lr_min:
            return self.hp.rho
        fraction = min(max((lr - lr_min) / (lr_max - lr_min), 0.0), 1.0)
        return self.hp.rho_min + (self.hp.rho - self.hp.rho_min) * fraction

    def _combine(self, ctx: Update) -> bool:
        grads, g0 = ctx.grads(), ctx.kept["g0"]
        norm0, norm_k = ctx.norms[0], ctx.norms[self.hp.steps]
        projection, shift = 0.0, 0.0
        if norm0 > 0 and norm_k > 0:
            cosine, shift = polarized_cosine_(g0, grads, norm0, norm_k)
            projection = cosine * norm0 / norm_k
        # g0 now holds g0 + shift·g_k, so g_k − a·(g0 − projection·g_k) reads:
        torch._foreach_mul_(grads, 1.0 + self.hp.alpha * (projection + shift))
        torch._foreach_add_(grads, g0, alpha=-self.hp.alpha)
        ctx.stats["rho"] = self._rho()
        return True
