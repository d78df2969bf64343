"""What the engine needs from torch.distributed: averaging the final direction and probe losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class Distributed:
    """Data-parallel settings of a sharpness-aware optimizer.

    ``local_ascent=False`` (synced): DDP averages every pass's gradient as usual; only probe losses are
    averaged here so every rank picks the same α*. ``local_ascent=True`` (per-replica ascent,
    "m-sharpness"): the closure runs backward under ``opt.no_sync(model)``, each rank combines its own
    passes, and the final direction is averaged once here, so replicas stay identical.
    """

    local_ascent: bool = False
    group: Any = None

    def world_size(self) -> int:
        return dist.get_world_size(self.group)

    def mean_(self, tensors: list[Tensor]) -> None:
        """Average tensors across ranks in place."""
        works = [dist.all_reduce(t, group=self.group, async_op=True) for t in tensors]
        for w in works:
            w.wait()
        torch._foreach_div_(tensors, float(self.world_size()))

    def mean(self, values: Tensor) -> Tensor:
        values = values.clone()
        self.mean_([values])
        return values
