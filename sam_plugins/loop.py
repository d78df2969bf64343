"""One training update with any optimizer, so a loop serves SAM variants and plain baselines alike."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .engine import SharpnessAware


def update(opt: torch.optim.Optimizer, compute_loss: Callable[[], Tensor]) -> Tensor:
    """Run one update; ``compute_loss`` evaluates the batch's loss (a SAM variant calls it several times)."""
    if isinstance(opt, SharpnessAware):
        def closure() -> Tensor:
            loss = compute_loss()
            opt.backward(loss)
            return loss

        return opt.step(closure)
    opt.zero_grad()
    loss = compute_loss()
    loss.backward()
    opt.step()
    return loss.detach()
