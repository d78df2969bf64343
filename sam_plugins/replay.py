"""Making every pass of an update see the same batch the same way, and undoing what the passes changed.

``RngReplay`` gives every pass the RNG state of pass 0 (the same dropout masks) and leaves the generators as
after pass 0; ``Snapshot`` backs up θ and the running statistics of normalization layers (updated once per
update, as with a plain optimizer) and restores them bit-identically.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RngReplay:
    """Captures the CPU and CUDA RNG states before pass 0 and replays them before every later pass."""

    def __init__(self, devices: set[torch.device]) -> None:
        self.cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
        self.before = self._capture()
        self.after: tuple | None = None

    def _capture(self) -> tuple:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(i) for i in self.cuda]

    def _set(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        for i, s in zip(self.cuda, state[1]):
            torch.cuda.set_rng_state(s, i)

    def replay(self) -> None:
        if self.after is None:
            self.after = self._capture()
        self._set(self.before)

    def finish(self) -> None:
        if self.after is not None:
            self._set(self.after)


class NoReplay:
    """Passes draw fresh random numbers (``replay_rng=False``, or a caller that replays them itself)."""

    def replay(self) -> None:
        pass

    def finish(self) -> None:
        pass


def running_stat_buffers(model: nn.Module) -> list[Tensor]:
    """Running statistics of every normalization layer that tracks them (BatchNorm and friends)."""
    buffers = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            buffers += [b for b in (module.running_mean, module.running_var, module.num_batches_tracked)
                        if b is not None]
    return buffers


class Snapshot:
    """θ and the model's running statistics, saved in buffers reused across updates."""

    def __init__(self) -> None:
        self.params: list[Tensor] = []
        self.stats: list[Tensor] = []

    def save(self, params: list[Tensor], model: nn.Module | None) -> list[Tensor]:
        """Copy ``params`` (and the model's running statistics) aside; returns the copy of ``params``."""
        if len(self.params) != len(params) or any(
                b.shape != p.shape or b.device != p.device or b.dtype != p.dtype for b, p in zip(self.params, params)):
            self.params = [torch.empty_like(p) for p in params]
        torch._foreach_copy_(self.params, params)
        if model is not None:
            buffers = running_stat_buffers(model)
            if len(self.stats) != len(buffers):
                self.stats = [torch.empty_like(b) for b in buffers]
            if buffers:
                torch._foreach_copy_(self.stats, buffers)
        return self.params

    def restore(self, params: list[Tensor], model: nn.Module | None) -> None:
        """θ back with ``copy_`` (bit-identical) and the running statistics as they were after pass 0."""
        torch._foreach_copy_(params, self.params)
        if model is not None and self.stats:
            torch._foreach_copy_(running_stat_buffers(model), self.stats)
