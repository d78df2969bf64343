"""The 2D test function of the XSAM paper (App. D.1) and optimizer trajectories on it.

L(μ, σ) = −log(0.7·exp(−K_1/1.8²) + 0.3·exp(−K_2/1.2²)), K_i the KL divergence between N(μ, σ²) and
N(μ_i, σ_i²), (μ_1, σ_1) = (20, 30), (μ_2, σ_2) = (−20, 10). It has a sharp minimum near
(−16.8, 12.8) and a flat one near (19.8, 29.9).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sam_plugins import create, update

SHARP_MINIMUM = (-16.8, 12.8)
FLAT_MINIMUM = (19.8, 29.9)
START = (-6.0, 10.0)
PAPER_SETTINGS = {"lr": 5.0, "momentum": 0.9, "rho": 6.0, "rho_m": 18.0, "steps_total": 400}


def kl_to(mu: Tensor, sigma: Tensor, mu_i: float, sigma_i: float) -> Tensor:
    return math.log(sigma_i) - torch.log(sigma) + (sigma**2 + (mu - mu_i) ** 2) / (2 * sigma_i**2) - 0.5


def loss2d(theta: Tensor) -> Tensor:
    mu, sigma = theta[0], theta[1]
    k1, k2 = kl_to(mu, sigma, 20.0, 30.0), kl_to(mu, sigma, -20.0, 10.0)
    return -torch.log(0.7 * torch.exp(-k1 / 1.8**2) + 0.3 * torch.exp(-k2 / 1.2**2))


def trajectory(variant: str | None, steps_total: int = 400, start: tuple[float, float] = START,
               lr: float = 5.0, momentum: float = 0.9, **hyper: Any) -> Tensor:
    """Points visited by SGD (``variant=None``) or a sharpness-aware variant over SGD, shape (steps+1, 2)."""
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    if variant is None:
        opt: torch.optim.Optimizer = torch.optim.SGD([theta], lr=lr, momentum=momentum)
    else:
        opt = create(variant, [theta], base="sgd", lr=lr, momentum=momentum, **hyper)
    points = [theta.detach().clone()]
    for _ in range(steps_total):
        update(opt, lambda: loss2d(theta))
        points.append(theta.detach().clone())
    return torch.stack(points)


def nearest_minimum(point: Tensor) -> str:
    sharp = math.dist(point.tolist(), SHARP_MINIMUM)
    flat = math.dist(point.tolist(), FLAT_MINIMUM)
    return "flat" if flat < sharp else "sharp"
