"""Reductions over lists of tensors (all parameters at once), built on ``torch._foreach_*``."""

from __future__ import annotations

import torch
from torch import Tensor


def accumulation_dtype(tensors: list[Tensor]) -> torch.dtype:
    """float64 for double-precision models, float32 otherwise (half tensors are reduced in fp32)."""
    return torch.float64 if tensors[0].dtype == torch.float64 else torch.float32


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The 2-norm of all tensors seen as one vector, as a 0-dim tensor (no host sync)."""
    dtype = accumulation_dtype(tensors)
    norms = torch._foreach_norm(tensors, 2, dtype=dtype)
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def dot(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    """Inner product of two lists seen as vectors, as a 0-dim tensor (no host sync).

    torch has no fused ``_foreach_dot``; this launches one ``dot`` kernel per tensor and sums them
    on the device. It runs once per update, not per parameter step.
    """
    dtype = accumulation_dtype(xs)
    device = xs[0].device
    parts = [torch.dot(x.reshape(-1).to(dtype), y.reshape(-1).to(dtype)).to(device) for x, y in zip(xs, ys)]
    return torch.stack(parts).sum()


def to_host(*values: Tensor) -> list[float]:
    """Bring several 0-dim tensors to the host in a single synchronisation."""
    device = values[0].device
    return torch.stack([v.detach().reshape(()).to(device, torch.float64) for v in values]).tolist()
