"""XSAM (Chen & Zhou, ICLR 2026, Algorithm 1): probe the maximum on the plane of (ϑ_k − ϑ_0, g_k).

After k ascent steps, v0 = (ϑ_k − ϑ_0)/‖·‖ and v1 = g_k/‖g_k‖ span a plane; v(α) is their spherical
interpolation. Every probe evaluates L(ϑ_0 + ρ_m·v(α)) on the same batch for α on the official
code's grid 0, δ, 2δ, … ≤ alpha_max (forward passes only) and keeps the argmax α*; the update direction
is scale·v(α*), the scale being ‖g_k‖ by default (App. F lists the alternatives).

Every probe is recorded in ``opt.probe_history`` (bounded), counted in ``opt.counters``, and a warning
says when α* sits at the grid's upper edge on several consecutive probes: the in-plane maximum then lies
beyond ``alpha_max`` and the update is the grid's edge, not the probed maximum.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..context import Update
from ..engine import SharpnessAware
from ..hyper import COMMON, Hyper, with_defaults
from ..registry import register
from ..tensors import Tensors, global_norm, polarized_cosine_, to_host

GRAD_SCALES = ("norm_k", "norm_0", "mean_norm", "max_norm", "slope_k", "slope_m")
GRID_TOLERANCE = 1e-5  # the official grid is numpy.arange(0, alpha_max + 1e-5, alpha_step)
EDGE_WARNING_STREAK = 3  # consecutive probes with α* at the upper edge before the warning


@dataclass(frozen=True)
class Probe:
    """One α probe: the update it ran in, the grid and its losses, α*, the plane's angle ψ, and the edge of
    the grid α* sits on ("upper", "lower", or "" inside)."""

    update: int
    alphas: tuple[float, ...]
    losses: tuple[float, ...]
    alpha: float
    psi: float
    edge: str


@dataclass(frozen=True)
class Plane:
    """The probe plane: ‖ϑ_k − ϑ_0‖, ‖g_k‖, the angle ψ between them, and the shift s of u = ϑ_k − ϑ_0 + s·g_k.

    The difference ϑ_k − ϑ_0 is overwritten by u while the angle is measured (no per-tensor dot), so
    directions in the plane are written over u and g_k.
    """

    delta_norm: float
    grad_norm: float
    psi: float
    shift: float = 0.0

    @classmethod
    def measure(cls, delta: list[Tensor], grads: list[Tensor], delta_norm: float, grad_norm: float) -> Plane:
        """The plane of ``delta`` and ``grads``; ``delta`` becomes u unless the plane degenerates (s = 0)."""
        if delta_norm > 0 and grad_norm > 0:
            cosine, shift = polarized_cosine_(delta, grads, delta_norm, grad_norm)
            return cls(delta_norm, grad_norm, math.acos(cosine), shift)
        return cls(delta_norm, grad_norm, 0.0)

    def coefficients(self, alpha: float) -> tuple[float, float]:
        """(c0, c1) with v(α) = c0·v0 + c1·v1; v(α) = v0 where the plane degenerates (sin ψ ≈ 0)."""
        if self.delta_norm == 0:
            return 0.0, 1.0
        sin_psi = math.sin(self.psi)
        if self.grad_norm == 0 or sin_psi < 1e-6:
            return 1.0, 0.0
        return math.sin((1.0 - alpha) * self.psi) / sin_psi, math.sin(alpha * self.psi) / sin_psi

    def direction(self, alpha: float) -> tuple[float, float]:
        """(a_u, a_g) with v(α) = a_u·u + a_g·g_k, from v0 = (u − s·g_k)/‖ϑ_k − ϑ_0‖ and v1 = g_k/‖g_k‖."""
        c0, c1 = self.coefficients(alpha)
        along_u = c0 / self.delta_norm if self.delta_norm > 0 else 0.0
        along_g = c1 / self.grad_norm if self.grad_norm > 0 else 0.0
        return along_u, along_g - along_u * self.shift


@register
class XSAM(SharpnessAware):
    """Explicit SAM: update along the probed direction v(α*) away from the neighbourhood maximum."""

    name = "xsam"
    hyperparameters = (
        *with_defaults(COMMON, rho=0.15),
        Hyper("rho_m", float, 0.3, "radius ρ_m of the neighbourhood where the maximum is probed",
              low=0.0, low_open=True),
        Hyper("alpha", float, 1.0, "starting α*, and the fixed α when probe is off (1: SAM's direction)"),
        Hyper("alpha_max", float, 2.0, "upper end a of the probed α grid [0, a]", low=0.0, low_open=True),
        Hyper("alpha_step", float, 0.1, "spacing δ of the probed α grid 0, δ, 2δ, … ≤ alpha_max (official alpha_delta)",
              low=0.0, low_open=True),
        Hyper("probe", bool, True, "probe α* (False: keep the fixed alpha, the paper's WSAM-like baseline)"),
        Hyper("probe_every", int, 0,
              "also probe every N updates (0: only on the first update and after each begin_epoch())", low=0),
        Hyper("grad_scale", str, "norm_k", "length of the update: ‖g_k‖, ‖g_0‖, the mean or max ‖g_i‖, "
              "or the loss slope towards ϑ_k or towards the probed maximum (App. F)", choices=GRAD_SCALES),
        Hyper("probe_history", int, 100, "how many recent probes opt.probe_history keeps (curve, α*, ψ, edge)",
              low=0),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe_history: deque[Probe] = deque(maxlen=self.hp.probe_history)
        self._edge_warned = False

    def initial_scalars(self) -> dict[str, Any]:
        return {"alpha": self.hp.alpha, "probe_pending": True, "upper_edge_streak": 0}

    def initial_counters(self) -> dict[str, int]:
        return {"probes": 0, "upper_edge_probes": 0, "lower_edge_probes": 0}

    def epoch_started(self) -> None:
        """Probe α* on the next update (the official code probes on each epoch's first batch)."""
        self.scalars["probe_pending"] = True

    def alphas(self) -> list[float]:
        """The probed grid, as the official code builds it."""
        count = math.ceil((self.hp.alpha_max + GRID_TOLERANCE) / self.hp.alpha_step)
        return [i * self.hp.alpha_step for i in range(count)]

    def _probe_due(self) -> bool:
        every = self.hp.probe_every
        return self.hp.probe and (self.scalars["probe_pending"] or
                                  (every > 0 and self.counters["updates"] % every == 0))

    def combine(self, ctx: Update) -> None:
        # ctx.params serve as scratch from here on (the engine restores θ before the base step): first ϑ_k − θ,
        # then u = ϑ_k − θ + s·g_k (see Plane), then the probe points.
        params, grads = ctx.params, ctx.grads()
        torch._foreach_sub_(params, ctx.origin)
        (delta_norm,) = to_host(global_norm(params))
        plane = Plane.measure(params, grads, delta_norm, ctx.norms[self.hp.steps])
        probe = self._probe_due()
        shifted: Tensors = params
        if probe or self.hp.grad_scale == "slope_m":
            shifted = torch._foreach_mul(params, 1.0)
        alpha, peak = self.scalars["alpha"], None
        if probe:
            alphas = self.alphas()
            losses = self._probe_losses(ctx, shifted, plane, alphas)
            finite = [(value, -i) for i, value in enumerate(losses) if math.isfinite(value)]
            if finite:
                peak, best = max(finite)
                alpha = alphas[-best]
                self._stage_probe(ctx, Probe(self.counters["updates"], tuple(alphas), tuple(losses), alpha,
                                             plane.psi, _edge(-best, len(alphas))))
        if self.hp.grad_scale == "slope_m" and peak is None:
            (peak,) = self._probe_losses(ctx, shifted, plane, [alpha])
        scale = self._scale(ctx, plane, peak)
        along_u, along_g = plane.direction(alpha)
        torch._foreach_mul_(grads, scale * along_g)
        if along_u != 0.0:
            torch._foreach_add_(grads, shifted, alpha=scale * along_u)
        ctx.stats.update(alpha=alpha, psi=plane.psi, probed=float(probe))

    def _stage_probe(self, ctx: Update, probe: Probe) -> None:
        upper = probe.edge == "upper"
        ctx.stage(scalars={"alpha": probe.alpha, "probe_pending": False,
                           "upper_edge_streak": self.scalars["upper_edge_streak"] + 1 if upper else 0},
                  counts={"probes": 1, "upper_edge_probes": int(upper),
                          "lower_edge_probes": int(probe.edge == "lower")})
        ctx.stats["upper_edge"] = float(upper)
        ctx.kept["probe"] = probe

    def after_step(self, ctx: Update) -> None:
        probe = ctx.kept.get("probe")
        if probe is None:
            return
        self.probe_history.append(probe)
        streak = self.scalars["upper_edge_streak"]
        if streak >= EDGE_WARNING_STREAK and not self._edge_warned:
            self._edge_warned = True
            warnings.warn(
                f"XSAM: α* was at the upper edge of the probe grid (alpha_max={self.hp.alpha_max}) on the last "
                f"{streak} probes ({self.counters['upper_edge_probes']} of {self.counters['probes']} so far): "
                "the loss maximum on the probe plane lies beyond alpha_max, so each update follows the grid's "
                "edge, not the probed maximum. opt.probe_history holds the probe curves; a larger alpha_max or "
                "a smaller rho_m moves the maximum inside the grid.", RuntimeWarning, stacklevel=_caller_level())

    def _probe_losses(self, ctx: Update, shifted: Tensors, plane: Plane, alphas: list[float]) -> list[float]:
        """L(ϑ_0 + ρ_m·v(α)) for each α, forward only, averaged over replicas when distributed."""
        grads, losses = ctx.grads(), []
        for alpha in alphas:
            along_u, along_g = plane.direction(alpha)
            ctx.move_to_origin()
            torch._foreach_add_(ctx.params, shifted, alpha=self.hp.rho_m * along_u)
            torch._foreach_add_(ctx.params, grads, alpha=self.hp.rho_m * along_g)
            losses.append(ctx.forward_pass().to(torch.float64).reshape(()))
        return ctx.replica_mean(torch.stack(losses)).tolist()

    def _scale(self, ctx: Update, plane: Plane, peak: float | None) -> float:
        norms, losses, k = ctx.norms, ctx.losses, self.hp.steps
        choice = self.hp.grad_scale
        if choice == "norm_k":
            return norms[k]
        if choice == "norm_0":
            return norms[0]
        if choice == "mean_norm":
            return sum(norms) / len(norms)
        if choice == "max_norm":
            return max(norms)
        if choice == "slope_k":
            slope = (losses[k] - losses[0]) / plane.delta_norm if plane.delta_norm > 0 else 0.0
        else:
            assert peak is not None, "slope_m always probes the peak"
            slope = (peak - losses[0]) / self.hp.rho_m
        return slope


def _edge(index: int, count: int) -> str:
    if count > 1 and index == count - 1:
        return "upper"
    if count > 1 and index == 0:
        return "lower"
    return ""


_PACKAGE = os.path.dirname(os.path.dirname(__file__))
_INTERNAL = (os.path.dirname(__file__), *(os.path.join(_PACKAGE, f) for f in ("engine.py", "context.py", "loop.py")),
             os.path.dirname(torch.__file__))


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the training loop: the first frame outside the engine,
    the variants and torch."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level
