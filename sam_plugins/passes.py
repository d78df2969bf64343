"""Running the closure for one update: gradient passes in true units, forward-only probes, and the finiteness
check that every replica agrees on.

A GradScaler's scale is divided out of the gradients right after each pass, so norms, ascent steps and every
variant's arithmetic see true units; the engine puts the scale back on the final direction for the scaler's
own unscale-and-step (exact for the power-of-two scales GradScaler uses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .distributed import Distributed
from .replay import NoReplay, RngReplay
from .tensors import Tensors, global_norm, to_host

if TYPE_CHECKING:
    from .context import Update


class Passes:
    """The closure of one ``step`` call and what running it needs: RNG replay, the loss scale, replicas."""

    def __init__(self, owner: str, closure: Callable[[], Tensor], rng: RngReplay | NoReplay, loss_scale: float,
                 distributed: Distributed | None, helper_backward: bool) -> None:
        self.owner = owner
        self.closure = closure
        self.rng = rng
        self.loss_scale = loss_scale
        self.distributed = distributed
        self.helper_backward = helper_backward  # the closure calls opt.backward: probes may run without grad
        self.probing = False

    def run(self) -> Tensor:
        """The closure, with autograd on; its return value must be the loss tensor."""
        with torch.enable_grad():
            loss = self.closure()
        if not isinstance(loss, Tensor):
            raise TypeError(f"{self.owner}: the closure must return the loss tensor, got {type(loss).__name__}")
        return loss

    def unscale(self, ctx: Update) -> None:
        """Divide the loss scale out of the current gradients."""
        if self.loss_scale != 1.0:
            torch._foreach_mul_(ctx.grads(), 1.0 / self.loss_scale)

    def gradient(self, ctx: Update) -> Tensor:
        """A gradient at the current parameters, from empty ``.grad``, RNG replayed, in true units."""
        for p in ctx.params:
            p.grad = None
        self.rng.replay()
        loss = self.run()
        self.unscale(ctx)
        return loss

    def forward(self, ctx: Update) -> Tensor:
        """The loss at the current parameters; the stored gradients are left as they are."""
        grads = [p.grad for p in ctx.params]
        for p in ctx.params:
            p.grad = None
        self.rng.replay()
        self.probing = True
        try:
            with torch.no_grad() if self.helper_backward else torch.enable_grad():
                loss = self.closure()
        finally:
            self.probing = False
            for p, g in zip(ctx.params, grads):
                p.grad = g
        return loss.detach()

    def to_host_checked(self, loss: Tensor, tensors: Tensors) -> tuple[float, float, bool]:
        """The loss and the tensors' global norm on the host, and whether both are finite here and, when
        distributed, on every replica: ranks must skip together (one host sync either way)."""
        norm = global_norm(tensors)
        if self.distributed is None:
            loss_value, norm_value = to_host(loss, norm)
            return loss_value, norm_value, math.isfinite(loss_value) and math.isfinite(norm_value)
        loss_value, norm_value, flag = to_host(loss, norm, self.distributed.all_finite(loss, norm))
        return loss_value, norm_value, flag == 1.0
