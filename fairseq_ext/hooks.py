"""Where a sharpness-aware update fits into fairseq's trainer.

fairseq runs every micro-batch of an update (``--update-freq``), all-reduces, normalizes by the
sample size and clips, then calls ``task.optimizer_step``. That is the one place where the full-batch
gradient at θ is ready, so the update happens there: fairseq's own pass is the engine's first pass,
and the later passes replay the same micro-batches through ``task.train_step`` (same seed, hence the
same dropout masks; same no_sync pattern; same sample-size factor) through the trainer's top-level
precision wrapper, so loss scaling and fp16 master weights stay fairseq's own.

During ``train_step`` the trainer's optimizer records what the replays need: the sample-size factor
(``multiply_grads``), the clip norm (clipping then applies to the final direction only), the first
pass's loss; and its ``backward`` becomes a no-op during forward-only probes.

A skipped update (a non-finite pass) ends ``train_step`` as fairseq's own fp16 overflow does: not
counted, so ``num_updates``, the lr schedule, EMA and ``--max-update`` do not advance, and nothing
of it is logged but one warning line and ``sam_skipped``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from fairseq import metrics
from fairseq.optim.fp16_optimizer import FP16Optimizer, MemoryEfficientFP16Optimizer
from fairseq.tasks.fairseq_task import FairseqTask
from fairseq.trainer import Trainer

from .optimizer import FairseqSAM

logger = logging.getLogger(__name__)

AVERAGED = ("alpha", "psi", "sharpness", "rho", "eig_cosine")
# Without a loss scaler to back off (fp32), this many skipped updates in a row end the run with the error fairseq
# raises for a non-finite gradient; fp16 ends as fairseq's does, at the minimum loss scale.
MAX_SKIPPED_IN_A_ROW = 10
SUMMED = {"probed": "probes", "upper_edge": "upper_edge_probes"}


class SkippedUpdate(Exception):
    """Raised out of ``task.optimizer_step`` past fairseq's handlers, ends ``train_step`` uncounted."""


def sam_of(optimizer: Any) -> FairseqSAM | None:
    """Our optimizer, whether the trainer holds it directly or inside a precision wrapper."""
    for attr in ("fp32_optimizer", "wrapped_optimizer"):
        optimizer = getattr(optimizer, attr, optimizer)
    return optimizer if isinstance(optimizer, FairseqSAM) else None


class Precision:
    """The trainer's top-level optimizer as the replays see it: fp32, fp16 with fp32 master weights
    (``--fp16``, flat or not) or fp16 in place (``--memory-efficient-fp16``)."""

    def __init__(self, wrapper: Any, sam: FairseqSAM) -> None:
        self.wrapper, self.sam = wrapper, sam
        self.masters = isinstance(wrapper, FP16Optimizer)
        self.scaled = isinstance(wrapper, (FP16Optimizer, MemoryEfficientFP16Optimizer))
        scaler = getattr(wrapper, "scaler", None)
        self.loss_scale = float(scaler.loss_scale) if scaler is not None else 1.0

    def unscale_first_pass(self) -> None:
        """Apply fairseq's pending factor (1/loss scale × sample-size normalization) to g_0."""
        if self.scaled:
            self.wrapper._unscale_grads()

    def load_params(self) -> None:
        """The model computes with fp16 copies of the fp32 masters: copy the current point over and
        start their gradients afresh (the engine clears the gradients of the masters only)."""
        if self.masters:
            self.wrapper._sync_fp32_params_to_fp16()
            for p in self.wrapper.fp16_params:
                p.grad = None

    def collect_grads(self, factor: Any) -> None:
        """Gradients of a replay, normalized like the first pass's, on the engine's parameters."""
        if self.masters:
            for p in self.sam.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.wrapper._needs_sync = True
            self.wrapper._sync_fp16_grads_to_fp32()
        self.sam.multiply_grads(factor / self.loss_scale if self.scaled else factor)

    def finish(self, skipped: bool) -> str:
        """fp16 copies of the new masters; the loss scaler backs off after a skip (what it says is
        returned) or counts a good update."""
        if self.masters:
            self.wrapper._sync_fp32_params_to_fp16()
        scaler = getattr(self.wrapper, "scaler", None)
        if scaler is None:
            return ""
        if not skipped:
            scaler.update()
            return ""
        try:
            scaler.check_overflow(float("inf"))
        except OverflowError as backoff:
            return f"; {backoff}"
        return ""


@contextlib.contextmanager
def recording(optimizer: Any, sam: FairseqSAM) -> Iterator[None]:
    """Shadow three methods of the trainer's optimizer for the duration of one ``train_step``."""
    backward, multiply_grads, clip_grad_norm = optimizer.backward, optimizer.multiply_grads, optimizer.clip_grad_norm

    def record_backward(loss: torch.Tensor) -> None:
        if sam.core.probing:
            return
        sam.first_loss = sam.first_loss + loss.detach()
        backward(loss)

    def record_multiply_grads(c: Any) -> None:
        sam.grad_factor = c
        multiply_grads(c)

    def record_clip_grad_norm(max_norm: float, aggregate_norm_fn: Any = None) -> torch.Tensor:
        sam.clip_norm = max_norm
        return clip_grad_norm(0.0, aggregate_norm_fn)

    sam.first_loss, sam.grad_factor, sam.clip_norm = 0.0, 1.0, 0.0
    optimizer.backward, optimizer.multiply_grads = record_backward, record_multiply_grads
    optimizer.clip_grad_norm = record_clip_grad_norm
    try:
        yield
    finally:
        del optimizer.backward, optimizer.multiply_grads, optimizer.clip_grad_norm


def replay_closure(trainer: Trainer, samples: list[Any], precision: Precision, update_num: int):
    """Re-run every micro-batch of this update at the current parameters, exactly as fairseq did."""
    sam, last = precision.sam, len(samples) - 1

    def closure() -> torch.Tensor:
        if sam.core.hp.replay_rng:  # fairseq's per-update seed: the same dropout masks as the first pass
            trainer._set_seed()
        precision.load_params()
        total: torch.Tensor | None = None
        for i, sample in enumerate(samples):
            sample, is_dummy = trainer._prepare_sample(sample)
            local = (trainer.data_parallel_world_size > 1 and hasattr(trainer.model, "no_sync")
                     and i < last and not sam.core.probing)
            with trainer.model.no_sync() if local else contextlib.nullcontext():
                loss, _, _ = trainer.task.train_step(sample=sample, model=trainer.model,
                                                     criterion=trainer.criterion, optimizer=trainer.optimizer,
                                                     update_num=update_num, ignore_grad=is_dummy)
            total = loss.detach() if total is None else total + loss.detach()
        if not sam.core.probing:
            trainer.optimizer.all_reduce_grads(trainer.model)
            precision.collect_grads(sam.grad_factor)
        assert total is not None, "an update has at least one micro-batch"
        return total.float() * sam.grad_factor

    return closure


def log_stats(sam: FairseqSAM) -> None:
    """The update's statistics, averaged over replicas: means over the log interval, except the counts
    (``sam_skipped``, ``sam_probes``, ``sam_upper_edge_probes``), which are summed."""
    stats = sam.core.stats
    keys = sorted(k for k in stats if k in AVERAGED or k in SUMMED)
    values = [stats[k] for k in keys]
    if sam.core.distributed is not None and keys:
        device = sam.core.param_groups[0]["params"][0].device
        values = sam.core.distributed.mean(torch.tensor(values, dtype=torch.float64, device=device)).tolist()
    for key, value in zip(keys, values):
        if key in SUMMED:
            metrics.log_scalar_sum(f"sam_{SUMMED[key]}", value, priority=900)
        else:
            metrics.log_scalar(f"sam_{key}", value, weight=1, round=4, priority=900)
    metrics.log_scalar_sum("sam_skipped", 0, priority=900)


_current: dict[str, Any] = {}
_original_train_step = Trainer.train_step
_original_begin_epoch = Trainer.begin_epoch
_original_optimizer_step = FairseqTask.optimizer_step


def train_step(self: Trainer, samples: list[Any], raise_oom: bool = False) -> Any:
    sam = sam_of(self.optimizer)
    if sam is None:
        return _original_train_step(self, samples, raise_oom)
    _current.update(trainer=self, samples=samples)
    try:
        with recording(self.optimizer, sam):
            return _original_train_step(self, samples, raise_oom)
    except SkippedUpdate as skip:
        logger.warning(str(skip))
        self.zero_grad()
        with metrics.aggregate("train"):
            metrics.log_scalar_sum("sam_skipped", 1, priority=900)
            if self.cfg.common.fp16:
                metrics.log_scalar("loss_scale", self.optimizer.scaler.loss_scale, priority=700, round=4, weight=0)
            metrics.log_stop_time("train_wall")
        return None
    finally:
        _current.clear()


def begin_epoch(self: Trainer, epoch: int) -> None:
    _original_begin_epoch(self, epoch)
    sam = sam_of(self.optimizer)
    if sam is not None:
        sam.core.begin_epoch(epoch)


def optimizer_step(self: FairseqTask, optimizer: Any, model: Any, update_num: int) -> None:
    sam = sam_of(optimizer)
    if sam is None:
        return _original_optimizer_step(self, optimizer, model, update_num)
    precision = Precision(optimizer, sam)
    if not _current:
        raise RuntimeError("a sharpness-aware fairseq update needs fairseq_ext's trainer hooks (--user-dir)")
    if sam.clip_norm > 0:
        sam.core.hp.max_grad_norm = float(sam.clip_norm)
    precision.unscale_first_pass()
    first_loss = torch.as_tensor(sam.first_loss).float() * sam.grad_factor
    closure = replay_closure(_current["trainer"], _current["samples"], precision, update_num)
    sam.core.step(closure, loss=first_loss)
    skipped = bool(sam.core.stats.get("skipped"))
    backoff = precision.finish(skipped)
    sam.skipped_in_a_row = sam.skipped_in_a_row + 1 if skipped else 0
    if sam.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW and not precision.scaled:
        raise FloatingPointError(f"{sam.variant.name}: {sam.skipped_in_a_row} updates in a row skipped, the last "
                                 f"because {sam.core.last_skip}: gradients are Nan/Inf")
    if skipped:
        raise SkippedUpdate(f"{sam.variant.name}: skipped update {update_num + 1} ({sam.core.counters['skipped']} "
                            f"skipped so far): {sam.core.last_skip}; weights and optimizer state unchanged, "
                            f"the update is not counted{backoff}")
    log_stats(sam)
    return None


def install() -> None:
    """Install the three wrappers (idempotent)."""
    Trainer.train_step = train_step
    Trainer.begin_epoch = begin_epoch
    FairseqTask.optimizer_step = optimizer_step
