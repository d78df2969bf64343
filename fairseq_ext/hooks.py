"""Where a sharpness-aware update fits into fairseq's trainer.

fairseq runs every micro-batch of an update (``--update-freq``), all-reduces, normalizes by the
sample size and clips, then calls ``task.optimizer_step``. That is the one place where the full-batch
gradient at θ is ready, so the update happens there: fairseq's own pass is the engine's first pass,
and the later passes replay the same micro-batches through ``task.train_step`` (same seed, hence the
same dropout masks; same no_sync pattern; same sample-size factor). Two small wrappers make the
micro-batches and the epoch start visible at that point.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from fairseq import metrics
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks.fairseq_task import FairseqTask
from fairseq.trainer import Trainer

from .optimizer import FairseqSAM

_current: dict[str, Any] = {}


def sam_of(optimizer: Any) -> FairseqSAM | None:
    """Our optimizer, whether the trainer holds it directly or inside a precision wrapper."""
    for attr in ("fp32_optimizer", "wrapped_optimizer"):
        optimizer = getattr(optimizer, attr, optimizer)
    return optimizer if isinstance(optimizer, FairseqSAM) else None


def check_precision(trainer_optimizer: Any, sam: FairseqSAM) -> None:
    if isinstance(trainer_optimizer, AMPOptimizer):
        raise ValueError(f"--optimizer {sam.variant.name} does not support --amp: fairseq's AMPOptimizer divides "
                         "the gradients by the loss scale twice and cannot replay passes; use --fp16")
    if trainer_optimizer is not sam:
        raise ValueError(f"--optimizer {sam.variant.name} does not support {type(trainer_optimizer).__name__} yet "
                         "(--fp16, --memory-efficient-fp16, --bf16); train in fp32")


def replay_closure(trainer: Trainer, samples: list[Any], sam: FairseqSAM, update_num: int):
    """Re-run every micro-batch of this update at the current parameters, exactly as fairseq did."""
    optimizer = trainer.optimizer
    last = len(samples) - 1

    def closure() -> torch.Tensor:
        trainer._set_seed()
        total: torch.Tensor | None = None
        for i, sample in enumerate(samples):
            sample, is_dummy = trainer._prepare_sample(sample)
            local = (trainer.data_parallel_world_size > 1 and hasattr(trainer.model, "no_sync")
                     and i < last and not sam.core.probing)
            with trainer.model.no_sync() if local else contextlib.nullcontext():
                loss, _, _ = trainer.task.train_step(sample=sample, model=trainer.model,
                                                     criterion=trainer.criterion, optimizer=optimizer,
                                                     update_num=update_num, ignore_grad=is_dummy)
            total = loss.detach() if total is None else total + loss.detach()
        optimizer.all_reduce_grads(trainer.model)
        optimizer.multiply_grads(sam.grad_factor)
        return total * sam.grad_factor

    return closure


def log_stats(stats: dict[str, float]) -> None:
    for key in ("alpha", "psi", "sharpness", "rho", "skipped"):
        if key in stats:
            metrics.log_scalar(f"sam_{key}", stats[key], weight=0, round=4, priority=900)


_original_train_step = Trainer.train_step
_original_begin_epoch = Trainer.begin_epoch
_original_optimizer_step = FairseqTask.optimizer_step


def train_step(self: Trainer, samples: list[Any], raise_oom: bool = False) -> Any:
    sam = sam_of(self.optimizer)
    if sam is None:
        return _original_train_step(self, samples, raise_oom)
    sam.first_loss = 0.0
    _current.update(trainer=self, samples=samples)
    try:
        return _original_train_step(self, samples, raise_oom)
    finally:
        _current.clear()


def begin_epoch(self: Trainer, epoch: int) -> None:
    _original_begin_epoch(self, epoch)
    sam = sam_of(self.optimizer)
    if sam is not None:
        sam.core.begin_epoch()


def optimizer_step(self: FairseqTask, optimizer: Any, model: Any, update_num: int) -> None:
    sam = sam_of(optimizer)
    if sam is None:
        return _original_optimizer_step(self, optimizer, model, update_num)
    check_precision(optimizer, sam)
    if not _current:
        raise RuntimeError("a sharpness-aware fairseq update needs fairseq_ext's trainer hooks (--user-dir)")
    trainer, samples = _current["trainer"], _current["samples"]
    if sam.clip_norm > 0:
        sam.core.hp.max_grad_norm = float(sam.clip_norm)
    first_loss = torch.as_tensor(sam.first_loss, dtype=torch.float64) * torch.as_tensor(sam.grad_factor).double()
    sam.core.step(replay_closure(trainer, samples, sam, update_num), loss=first_loss)
    log_stats(sam.core.stats)
    return None


def install() -> None:
    """Install the three wrappers (idempotent)."""
    Trainer.train_step = train_step
    Trainer.begin_epoch = begin_epoch
    FairseqTask.optimizer_step = optimizer_step
