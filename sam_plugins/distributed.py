"""What the engine needs from torch.distributed: averaging the final direction and probe losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

BUCKET_BYTES = 32 * 2**20


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
        """Average tensors across ranks in place: flattened into buckets of one dtype and device (at most
        ``BUCKET_BYTES`` each unless one tensor is larger), one blocking all-reduce per bucket, as DDP does."""
        for bucket in _buckets(tensors):
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.all_reduce(flat, group=self.group)
            flat.div_(self.world_size())
            pieces = flat.split([t.numel() for t in bucket])
            torch._foreach_copy_(bucket, [piece.view_as(t) for piece, t in zip(pieces, bucket)])

    def all_finite(self, *values: Tensor) -> Tensor:
        """1.0 where every value is finite on every rank, else 0.0 (a device tensor, no host sync): ranks
        must agree to skip an update, or one waits forever in a collective the others never join."""
        flag = torch.stack([v.detach().float().reshape(()) for v in values]).isfinite().all().float()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
        return flag

    def mean(self, values: Tensor) -> Tensor:
        values = values.clone()
        self.mean_([values])
        return values


def _buckets(tensors: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive runs of tensors of one dtype and device, cut where a run would pass ``BUCKET_BYTES``;
    every rank holds the same tensors in the same order, so every rank cuts the same buckets."""
    buckets: list[list[Tensor]] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        last = buckets[-1][-1] if buckets else None
        if last is None or (last.dtype, last.device) != (t.dtype, t.device) or size + nbytes > BUCKET_BYTES:
            buckets.append([])
            size = 0
        buckets[-1].append(t)
        size += nbytes
    return buckets
