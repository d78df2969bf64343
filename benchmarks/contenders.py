"""What the benchmark times: the plain base, every sam_plugins variant, and pytorch_optimizer's peers.

Each contender knows how its library expects one update to be driven, given a closure that computes
the loss and its gradient on the batch (``closure(backward)``: ``backward(loss)`` backpropagates).
"""

from __future__ import annotations

import copy
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sam_plugins import available, create
from sam_plugins.bases import resolve_base

from .workloads import Workload

Backward = Callable[[Tensor], None]
MakeClosure = Callable[[Backward], Callable[[], Tensor]]
PEER_LIBRARY = "pytorch_optimizer"


def _plain_backward(loss: Tensor) -> None:
    loss.backward()


@dataclass
class Contender:
    """One row of the table: how to build the optimizer over a model and how to run one update."""

    name: str
    family: str  # "base", "ours" or PEER_LIBRARY
    build: Callable[[nn.Module, Workload], torch.optim.Optimizer]
    drive: Callable[[torch.optim.Optimizer, MakeClosure], None]
    probe_each_update: bool = False

    def update(self, opt: torch.optim.Optimizer, make_closure: MakeClosure) -> None:
        if self.probe_each_update:
            opt.begin_epoch()
        self.drive(opt, make_closure)


def _drive_base(opt: torch.optim.Optimizer, make_closure: MakeClosure) -> None:
    opt.zero_grad()
    make_closure(_plain_backward)()
    opt.step()


def _drive_ours(opt: torch.optim.Optimizer, make_closure: MakeClosure) -> None:
    opt.step(make_closure(opt.backward))


def _drive_peer_sam(opt: torch.optim.Optimizer, make_closure: MakeClosure) -> None:
    """pytorch_optimizer's SAM / FriendlySAM: the caller runs the first pass, step() the second."""
    closure = make_closure(_plain_backward)
    opt.zero_grad()
    closure()

    def again() -> Tensor:
        opt.zero_grad()
        return closure()

    opt.step(again)


def _drive_peer_wsam(opt: torch.optim.Optimizer, make_closure: MakeClosure) -> None:
    """pytorch_optimizer's WSAM runs both passes inside step(); its first step zeroes the gradient."""
    opt.zero_grad()
    opt.step(make_closure(_plain_backward))


def _drive_peer_gsam(opt: torch.optim.Optimizer, make_closure: MakeClosure) -> None:
    """pytorch_optimizer's GSAM: the closure returns (outputs, loss) and must clear the gradient itself."""
    closure = make_closure(_plain_backward)

    def get_grad() -> tuple[None, Tensor]:
        opt.base_optimizer.zero_grad()
        return None, closure()

    opt.step(get_grad)


def _ours(name: str, **hyper: Any) -> Callable[[nn.Module, Workload], torch.optim.Optimizer]:
    def build(model: nn.Module, work: Workload) -> torch.optim.Optimizer:
        return create(name, model.parameters(), base=work.base, model=model, **hyper, **work.base_kwargs)

    return build


def _base(model: nn.Module, work: Workload) -> torch.optim.Optimizer:
    return resolve_base(work.base)(model.parameters(), **work.base_kwargs)


def ours(rho: float) -> list[Contender]:
    """Every registered variant at its declared defaults (ρ shared with the peers), plus the rows the
    targets need: multi-step SAM/XSAM and XSAM with a probe in every update."""
    rows = [Contender("base", "base", _base, _drive_base)]
    for name in available():
        hyper = {"rho": rho} if name in ("sam", "fsam", "wsam", "gsam") else {}
        rows.append(Contender(name, "ours", _ours(name, **hyper), _drive_ours))
    rows.append(Contender("sam k=2", "ours", _ours("sam", rho=rho, steps=2), _drive_ours))
    rows.append(Contender("xsam k=2", "ours", _ours("xsam", steps=2), _drive_ours))
    rows.append(Contender("xsam probe", "ours", _ours("xsam"), _drive_ours, probe_each_update=True))
    return rows


def peers(rho: float) -> list[Contender]:
    """pytorch_optimizer's SAM (its default foreach setting and foreach=True), GSAM, WSAM, FriendlySAM."""
    import pytorch_optimizer as po

    def sam(foreach: bool | None) -> Callable[[nn.Module, Workload], torch.optim.Optimizer]:
        def build(model: nn.Module, work: Workload) -> torch.optim.Optimizer:
            return po.SAM(model.parameters(), resolve_base(work.base), rho=rho, foreach=foreach, **work.base_kwargs)

        return build

    def gsam(model: nn.Module, work: Workload) -> torch.optim.Optimizer:
        base = resolve_base(work.base)(model.parameters(), **work.base_kwargs)
        constant = torch.optim.lr_scheduler.LambdaLR(base, lambda _: 1.0)
        rho_schedule = po.ProportionScheduler(constant, max_lr=work.base_kwargs["lr"], min_lr=0.0,
                                              max_value=rho, min_value=rho)
        return po.GSAM(model.parameters(), base, model, rho_schedule, alpha=0.4)

    def wsam(model: nn.Module, work: Workload) -> torch.optim.Optimizer:
        return po.WSAM(model, model.parameters(), resolve_base(work.base), rho=rho, gamma=0.9, **work.base_kwargs)

    def friendly(model: nn.Module, work: Workload) -> torch.optim.Optimizer:
        return po.FriendlySAM(model.parameters(), resolve_base(work.base), rho=rho, sigma=1.0, lmbda=0.9,
                              **work.base_kwargs)

    return [
        Contender("SAM", PEER_LIBRARY, sam(None), _drive_peer_sam),
        Contender("SAM foreach", PEER_LIBRARY, sam(True), _drive_peer_sam),
        Contender("GSAM", PEER_LIBRARY, gsam, _drive_peer_gsam),
        Contender("WSAM", PEER_LIBRARY, wsam, _drive_peer_wsam),
        Contender("FriendlySAM", PEER_LIBRARY, friendly, _drive_peer_sam),
    ]


def peer_version() -> str | None:
    try:
        return importlib.metadata.version(PEER_LIBRARY)
    except importlib.metadata.PackageNotFoundError:
        return None


def without_dropout(model: nn.Module) -> nn.Module:
    """A copy whose dropout is off: the peers do not replay dropout masks, so updates match only without it."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    return model

