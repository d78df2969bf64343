"""X-SAM (Duan, Chen & Guan, Algorithm 2), registered as ``evsam``: eigenvector-corrected SAM.

Every ``eig_every`` updates, ``eig_iters`` power iterations estimate the top Hessian eigenvector v at
θ. The Hessian-vector products are finite differences of gradients on the same batch,
H·v ≈ (∇L(θ + h·v) − ∇L(θ))/h, so any plain closure works (one extra gradient pass per iteration).
The update direction is the unit perturbed gradient ĝ = g_k/‖g_k‖ corrected as in Eq. 11:
ĝ − α·sign(⟨g_k, v⟩)·⟨ĝ, v⟩·v.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..context import Update
from ..engine import SharpnessAware
from ..hyper import COMMON, Hyper
from ..registry import register
from ..tensors import Tensors, global_norm, polarized_cosine_


@register
class EVSAM(SharpnessAware):
    """X-SAM: SAM whose unit update direction is damped along the dominant Hessian eigenvector."""

    name = "evsam"
    hyperparameters = (
        *COMMON,
        Hyper("alpha", float, 0.2, "correction strength α along the top eigenvector", low=0.0, high=2.0),
        Hyper("eig_every", int, 5, "refresh the eigenvector every p updates", low=1),
        Hyper("eig_iters", int, 5, "power iterations q per refresh (one gradient pass each)", low=1),
        Hyper("eig_warm_start", bool, True, "start each refresh from the previous eigenvector"),
        Hyper("eig_eps", float, 1e-3, "finite-difference step h of the Hessian-vector products",
              low=0.0, low_open=True),
        Hyper("seed", int, 0, "seed of the random start vector of the power iteration", low=0),
    )

    def initial_scalars(self) -> dict[str, Any]:
        return {"eig_refreshes": 0}

    def prepare(self, ctx: Update) -> None:
        current = ctx.saved("eigvec")
        if current is not None and self.counters["updates"] % self.hp.eig_every != 0:
            ctx.kept["eigvec"] = current
            return
        g0 = ctx.keep_grads("g0")
        vec: Tensors = self._random_unit(ctx) if current is None or not self.hp.eig_warm_start else current
        for j in range(self.hp.eig_iters):
            ctx.move_to_origin()
            torch._foreach_add_(ctx.params, vec, alpha=self.hp.eig_eps)
            loss = ctx.gradient_pass()
            product = torch._foreach_sub(ctx.grads(), g0)
            norm = ctx.checked_norm(loss, product, f"Hessian power iteration {j + 1} of {self.hp.eig_iters}")
            if norm == 0:
                break
            torch._foreach_mul_(product, 1.0 / norm)
            vec = product
        ctx.move_to_origin()
        for p, g in zip(ctx.params, g0):
            p.grad = g
        ctx.kept["eigvec"] = vec
        ctx.stage(state={"eigvec": vec}, scalars={"eig_refreshes": self.scalars["eig_refreshes"] + 1})

    def _random_unit(self, ctx: Update) -> list[Tensor]:
        generator = torch.Generator().manual_seed(self.hp.seed + self.scalars["eig_refreshes"])
        vec = [torch.randn(p.shape, generator=generator).to(p) for p in ctx.params]
        torch._foreach_div_(vec, global_norm(vec))
        return vec

    def combine(self, ctx: Update) -> None:
        grads, norm = ctx.grads(), ctx.norms[self.hp.steps]
        if norm == 0:
            return
        vec = ctx.kept["eigvec"]
        cosine, shift = polarized_cosine_(grads, vec, norm, 1.0)
        # grads now hold g + shift·e (e has unit norm), so g/‖g‖ − a·|cos|·e reads:
        torch._foreach_mul_(grads, 1.0 / norm)
        torch._foreach_add_(grads, vec, alpha=-(shift / norm + self.hp.alpha * abs(cosine)))
        ctx.stats["eig_cosine"] = cosine
