"""Reductions over lists of tensors (all parameters at once), built on ``torch._foreach_*``."""

from __future__ import annotations

import torch
from torch import Tensor

# A list of tensors as torch._foreach_* takes and returns them (lists in, tuples out in the type stubs).
Tensors = list[Tensor] | tuple[Tensor, ...]


def accumulation_dtype(tensors: Tensors) -> torch.dtype:
    """float64 for double-precision models, float32 otherwise (half tensors are reduced in fp32)."""
    return torch.float64 if tensors[0].dtype == torch.float64 else torch.float32


def global_norm(tensors: Tensors) -> Tensor:
    """The 2-norm of all tensors seen as one vector, as a 0-dim tensor (no host sync)."""
    dtype = accumulation_dtype(tensors)
    norms = torch._foreach_norm(tensors, 2, dtype=dtype)
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def polarized_cosine_(x: list[Tensor], y: list[Tensor], x_norm: float, y_norm: float) -> tuple[float, float]:
    """cos∠(x, y) from two fused calls; overwrites ``x`` (scratch) with x + s·y and returns (cos, s).

    torch has no fused dot over a tensor list, and one ``dot`` per tensor costs a kernel launch per
    parameter. With s = ‖x‖/‖y‖ both terms are equally long, so ‖x + s·y‖² = 2‖x‖²(1 + cos) is well
    conditioned. The caller recovers x as (x + s·y) − s·y inside its own combination. Needs ‖x‖, ‖y‖ > 0,
    as measured on these tensors; one host sync.
    """
    shift = x_norm / y_norm
    torch._foreach_add_(x, y, alpha=shift)
    (sum_norm,) = to_host(global_norm(x))
    return min(1.0, max(-1.0, sum_norm ** 2 / (2.0 * x_norm ** 2) - 1.0)), shift


def to_host(*values: Tensor) -> list[float]:
    """Bring several 0-dim tensors to the host in a single synchronisation."""
    device = values[0].device
    return torch.stack([v.detach().reshape(()).to(device, torch.float64) for v in values]).tolist()
