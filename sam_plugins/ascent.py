"""One ascent step of the perturbation, over all param groups at once."""

from __future__ import annotations

import torch
from torch import Tensor

from .context import Update
from .tensors import Tensors, global_norm


def ascend(ctx: Update, direction: list[Tensor] | None, steps: int, norm: float) -> None:
    """ϑ_{i+1} = ϑ_i + ρ_g/k · e/‖e‖ with k = ``steps`` and e = ``direction`` or the current gradient (whose
    global norm ``norm`` the caller measured); in groups with ``adaptive`` (ASAM) the step is ρ_g/k · T²e/‖Te‖
    with T = |w| + η_g, T = 1 in the others, the norm taken over all groups. A zero direction does not move.
    ``direction`` is owned: it is scaled in place."""
    if direction is None and not any(span.hp["adaptive"] for span in ctx.spans):
        if norm > 0:
            grads = ctx.grads()
            for span in ctx.spans:
                torch._foreach_add_(span.of(ctx.params), span.of(grads), alpha=span.hp["rho"] / steps / norm)
        return
    owned = direction is not None
    vector = ctx.grads() if direction is None else direction
    parts: list[Tensors] = []
    scales: list[Tensors | None] = []
    for span in ctx.spans:
        part: Tensors = span.of(vector)
        scale: Tensors | None = None
        if span.hp["adaptive"]:
            scale = torch._foreach_abs(span.of(ctx.params))
            torch._foreach_add_(scale, span.hp["eta"])
            part = torch._foreach_mul(part, scale)
        parts.append(part)
        scales.append(scale)
    norm_t = global_norm([t for part in parts for t in part])
    for span, part, scale in zip(ctx.spans, parts, scales):
        factor = torch.where(norm_t > 0, span.hp["rho"] / steps / norm_t, torch.zeros_like(norm_t)).to(part[0].dtype)
        if scale is not None:
            torch._foreach_mul_(part, scale)
        if scale is not None or owned:
            torch._foreach_mul_(part, factor)
        else:
            part = torch._foreach_mul(part, factor)
        torch._foreach_add_(span.of(ctx.params), part)
