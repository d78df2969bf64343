"""Variants that mix the gradient at θ (g_0) into the update: WSAM and GSAM."""

from __future__ import annotations

import torch
from torch import Tensor

from ..context import Update
from ..engine import SharpnessAware
from ..hyper import COMMON, Hyper
from ..registry import register
from ..tensors import polarized_cosine_

# torch.nn.utils.clip_grad_norm_ divides by the norm plus this; WSAM's official code clips with it.
CLIP_EPS = 1e-6


@register
class WSAM(SharpnessAware):
    """Weighted SAM (Yue et al., KDD 2023): L + γ/(1−γ)·(sharpness), as in the official atorch code.

    With w = γ/(1−γ): ``decouple=False`` steps the base with g_0 + w·(g_k − g_0) (γ = 0.5 is SAM);
    ``decouple=True`` steps the base with g_0 and then moves θ by −lr·w·(g_k − g_0) directly, past
    momentum and Adam's normalisation. ``max_norm`` > 0 clips g_0 (after the ascent) and g_k each to that
    norm before they are combined, like the official code's ``max_norm``.
    """

    name = "wsam"
    hyperparameters = (
        *COMMON,
        Hyper("gamma", float, 0.9, "γ: the sharpness term is weighted γ/(1 − γ) (0.5: SAM)",
              low=0.0, high=1.0, high_open=True, per_group=True),
        Hyper("decouple", bool, True, "apply the sharpness term directly, scaled by the lr, after the base step"),
        Hyper("max_norm", float, 0.0, "clip g_0 and g_k each to this global norm before combining them (0: off)",
              low=0.0),
    )

    def _clip(self, grads: list[Tensor], norm: float) -> None:
        if self.hp.max_norm > 0:
            coefficient = self.hp.max_norm / (norm + CLIP_EPS)
            if coefficient < 1.0:
                torch._foreach_mul_(grads, coefficient)

    def observe(self, ctx: Update, i: int) -> None:
        if i == 0:
            self._clip(ctx.keep_grads("g0"), ctx.norms[0])

    def combine(self, ctx: Update) -> None:
        grads, g0 = ctx.grads(), ctx.kept["g0"]
        self._clip(grads, ctx.norms[self.hp.steps])
        if self.hp.decouple:
            torch._foreach_sub_(grads, g0)
            ctx.kept["sharpness"] = grads
            for p, g in zip(ctx.params, g0):
                p.grad = g
            return
        for span in ctx.spans:
            weight = _sharpness_weight(span.hp["gamma"])
            torch._foreach_mul_(span.of(grads), weight)
            torch._foreach_add_(span.of(grads), span.of(g0), alpha=1.0 - weight)

    def after_step(self, ctx: Update) -> None:
        sharpness = ctx.kept.get("sharpness")
        if sharpness is None:
            return
        ctx.local_ascent_mean_(sharpness)
        for group, span in ctx.groups:
            torch._foreach_add_(span.of(ctx.params), span.of(sharpness),
                                alpha=-float(group["lr"]) * _sharpness_weight(span.hp["gamma"]))


def _sharpness_weight(gamma: float) -> float:
    """WSAM's weight of the sharpness term, γ/(1 − γ)."""
    return gamma / (1.0 - gamma)


@register
class GSAM(SharpnessAware):
    """Surrogate-gap guided SAM (Zhuang et al. 2022): g_k − a·(g_0 − proj_{g_k} g_0).

    ρ is constant, as in the official PyTorch example; the paper's ρ that decays with the lr is
    ``sam_plugins.RhoFollowsLR`` (works with every variant).
    """

    name = "gsam"
    hyperparameters = (
        *COMMON,
        Hyper("alpha", float, 0.4, "strength a of the ascent along the part of g_0 orthogonal to g_k", low=0.0),
    )

    def observe(self, ctx: Update, i: int) -> None:
        if i == 0:
            ctx.keep_grads("g0")

    def combine(self, ctx: Update) -> None:
        grads, g0 = ctx.grads(), ctx.kept["g0"]
        norm0, norm_k = ctx.norms[0], ctx.norms[self.hp.steps]
        projection, shift = 0.0, 0.0
        if norm0 > 0 and norm_k > 0:
            cosine, shift = polarized_cosine_(g0, grads, norm0, norm_k)
            projection = cosine * norm0 / norm_k
        # g0 now holds g0 + shift·g_k, so g_k − a·(g0 − projection·g_k) reads:
        torch._foreach_mul_(grads, 1.0 + self.hp.alpha * (projection + shift))
        torch._foreach_add_(grads, g0, alpha=-self.hp.alpha)
