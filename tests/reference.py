"""Independent reference computations for the tests: a tiny MLP as a function of one flat float64
vector, and every variant's update written directly from the papers' formulas on flat vectors."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SHAPES = [(4, 3), (4,), (2, 4), (2,)]


def make_data(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 3, generator=g, dtype=torch.float64),
            torch.randn(6, 2, generator=g, dtype=torch.float64))


def make_model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def unflat(theta: Tensor) -> list[Tensor]:
    out, i = [], 0
    for shape in SHAPES:
        n = math.prod(shape)
        out.append(theta[i:i + n].view(shape))
        i += n
    return out


def loss_at(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    w1, b1, w2, b2 = unflat(theta)
    out = torch.tanh(x @ w1.T + b1) @ w2.T + b2
    return ((out - y) ** 2).mean()


def grad_at(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    theta = theta.detach().clone().requires_grad_(True)
    return torch.autograd.grad(loss_at(theta, x, y), theta)[0]


def hessian_at(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    return torch.autograd.functional.hessian(lambda t: loss_at(t, x, y), theta.detach())


def ascend(theta: Tensor, x: Tensor, y: Tensor, rho: float, steps: int, adaptive: bool = False,
           eta: float = 0.01, first_direction: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Points ϑ_0..ϑ_k and gradients g_0..g_k of k normalized ascent steps of ρ/k."""
    points, grads = [theta.clone()], [grad_at(theta, x, y)]
    for i in range(steps):
        e = first_direction if (i == 0 and first_direction is not None) else grads[-1]
        if adaptive:
            t = points[-1].abs() + eta
            step = t * t * e / torch.linalg.vector_norm(t * e)
        else:
            step = e / torch.linalg.vector_norm(e)
        points.append(points[-1] + rho / steps * step)
        grads.append(grad_at(points[-1], x, y))
    return points, grads


def slerp(v0: Tensor, v1: Tensor, alpha: float) -> Tensor:
    psi = math.acos(max(-1.0, min(1.0, float(v0 @ v1))))
    return (math.sin((1 - alpha) * psi) * v0 + math.sin(alpha * psi) * v1) / math.sin(psi)


def unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v)
