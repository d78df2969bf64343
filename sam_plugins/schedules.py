"""Schedules for ρ. ρ lives in ``param_groups`` like the lr, so anything that writes ``group["rho"]``
schedules it; ``RhoFollowsLR`` is GSAM's rule, usable with every variant."""

from __future__ import annotations

from typing import Any

import torch


class RhoFollowsLR:
    """ρ moves with each group's lr: ρ = ρ_min + (ρ_max − ρ_min)·(lr − lr_min)/(lr_max − lr_min).

    GSAM's ``ProportionScheduler`` rule, per param group. ρ_max is the group's ρ when this is built and
    lr_max the group's ``initial_lr`` (set by torch's schedulers), else its lr then. The fraction is
    clamped to [0, 1], so ρ stays within [ρ_min, ρ_max] during warmup; inside [lr_min, lr_max] the
    rule is GSAM's exactly. Call ``step()`` after the lr scheduler's ``step()``, like the official code::

        opt = sam_plugins.create("gsam", model.parameters(), lr=0.1, rho=0.04)
        lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        rho_schedule = RhoFollowsLR(opt, rho_min=0.02)
        ...
        opt.step(closure); lr_schedule.step(); rho_schedule.step()
    """

    def __init__(self, optimizer: torch.optim.Optimizer, rho_min: float, lr_min: float = 0.0) -> None:
        self.optimizer = optimizer
        self.rho_min = float(rho_min)
        self.lr_min = float(lr_min)
        self.rho_max: list[float] = []
        self.lr_max: list[float] = []
        for i, group in enumerate(optimizer.param_groups):
            if "rho" not in group:
                raise ValueError(f"RhoFollowsLR: param_groups[{i}] has no 'rho'; use a sharpness-aware optimizer")
            rho_max, lr_max = float(group["rho"]), float(group.get("initial_lr", group["lr"]))
            if not 0.0 <= self.rho_min <= rho_max:
                raise ValueError(f"RhoFollowsLR: rho_min={rho_min!r} is invalid; allowed: a float in "
                                 f"[0, {rho_max!r}] (param_groups[{i}]['rho'])")
            if not (lr_max > self.lr_min or (lr_max == self.lr_min and rho_max == self.rho_min)):
                raise ValueError(f"RhoFollowsLR: lr_min={lr_min!r} is invalid; allowed: a float below the lr "
                                 f"{lr_max!r} of param_groups[{i}] (or equal to it with rho_min equal to rho)")
            self.rho_max.append(rho_max)
            self.lr_max.append(lr_max)

    def step(self) -> list[float]:
        """Write each group's ρ from its current lr; returns the values written."""
        values = []
        for group, rho_max, lr_max in zip(self.optimizer.param_groups, self.rho_max, self.lr_max):
            fraction = 1.0 if lr_max == self.lr_min else (float(group["lr"]) - self.lr_min) / (lr_max - self.lr_min)
            group["rho"] = self.rho_min + (rho_max - self.rho_min) * min(max(fraction, 0.0), 1.0)
            values.append(group["rho"])
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"rho_min": self.rho_min, "lr_min": self.lr_min, "rho_max": list(self.rho_max),
                "lr_max": list(self.lr_max)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rho_min, self.lr_min = float(state["rho_min"]), float(state["lr_min"])
        self.rho_max, self.lr_max = list(state["rho_max"]), list(state["lr_max"])
