"""The update loop and evaluation. Each update gathers its ``--grad-accum-steps`` micro-batches first, so a
sharpness-aware optimizer can replay all of them in each of its passes; plain optimizers run the same loop."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torchvision.utils
from timm.models import model_parameters
from timm.utils import CheckpointSaver, ModelEmaV3, accuracy, dispatch_clip_grad
from torch import nn

from sam_plugins import SharpnessAware

logger = logging.getLogger("timm_ext.train")


@dataclass
class Run:
    """What the loop needs, built once by ``timm_ext.train.main``."""

    args: argparse.Namespace
    model: nn.Module
    ddp_model: nn.Module  # the model under DDP (the model itself in one process)
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    device: torch.device
    model_dtype: torch.dtype | None
    amp: Any  # a fresh autocast context per use: ``with run.amp():``
    scaler: torch.amp.GradScaler | None
    lr_scheduler: Any
    model_ema: ModelEmaV3 | None
    mixup: Any
    saver: CheckpointSaver | None
    output_dir: Path | None

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def world(self) -> int:
        return dist.get_world_size() if self.distributed else 1

    @property
    def primary(self) -> bool:
        return not self.distributed or dist.get_rank() == 0


def sharpness_aware(optimizer: torch.optim.Optimizer) -> SharpnessAware | None:
    """The sharpness-aware optimizer itself, or the one timm's Lookahead wraps (it forwards the closure)."""
    for candidate in (optimizer, getattr(optimizer, "_base_optimizer", None)):
        if isinstance(candidate, SharpnessAware):
            return candidate
    return None


def mean_over_replicas(values: list[float], run: Run) -> list[float]:
    """Averages of per-replica values (logged metrics), like timm's reduce_tensor; one all-reduce."""
    if not run.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=run.device)
    dist.all_reduce(tensor)
    return (tensor / run.world).tolist()


def replica_spread(model: nn.Module) -> float:
    """Largest difference of any parameter between data-parallel replicas (0.0: identical)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max())


def _to_device(run: Run, x: torch.Tensor, y: torch.Tensor, mix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch as the model takes it (``mix``: Mixup/CutMix for training batches); timm's prefetcher has already
    moved, normalised and mixed it."""
    if run.args.no_prefetcher:
        x, y = x.to(device=run.device, dtype=run.model_dtype), y.to(run.device)
        if mix and run.mixup is not None:
            x, y = run.mixup(x, y)
    if run.args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _step_plain(run: Run, forward_backward: Any) -> torch.Tensor:
    """A plain optimizer's update as timm makes it: unscale, clip (agc leaves the head out), step."""
    run.optimizer.zero_grad()
    loss = forward_backward()
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    if run.args.clip_grad is not None:
        parameters = model_parameters(run.model, exclude_head=run.args.clip_mode == "agc")
        dispatch_clip_grad(parameters, run.args.clip_grad, mode=run.args.clip_mode)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
    else:
        run.optimizer.step()
    return loss


def train_one_epoch(run: Run, epoch: int, loader: Any) -> OrderedDict:
    """One epoch; each update covers ``--grad-accum-steps`` micro-batches, all replayed by SAM variants."""
    args, optimizer = run.args, run.optimizer
    run.model.train()
    sam = sharpness_aware(optimizer)
    if sam is not None:
        sam.begin_epoch(epoch)
    if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
        if run.mixup is not None:
            run.mixup.mixup_enabled = False
        elif getattr(loader, "mixup_enabled", False):
            loader.mixup_enabled = False
    shown = ("alpha", "sharpness") if sam is not None else ()
    updates_per_epoch = math.ceil(len(loader) / args.grad_accum_steps)
    num_updates = epoch * updates_per_epoch
    loss_sum, updates, start, samples = 0.0, 0, time.perf_counter(), 0
    iterator = iter(loader)
    for update_idx in range(updates_per_epoch):
        batches = []
        for _ in range(args.grad_accum_steps):
            try:
                batches.append(_to_device(run, *next(iterator)))
            except StopIteration:
                break
        if not batches:
            break
        total = sum(len(x) for x, _ in batches)

        def forward_backward(batches: list = batches, total: int = total) -> torch.Tensor:
            """Loss and gradient of all micro-batches of this update, each weighted by its share."""
            loss_sum = torch.zeros((), device=run.device)
            for i, (x, y) in enumerate(batches):
                local = run.distributed and (i < len(batches) - 1 or (sam is not None and not sam.sync_gradients))
                with run.ddp_model.no_sync() if local else contextlib.nullcontext():
                    with run.amp():
                        loss = run.loss_fn(run.ddp_model(x), y) * (len(x) / total)
                    if sam is not None:
                        sam.backward(loss)
                    else:
                        (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
                loss_sum = loss_sum + loss.detach().float()
            return loss_sum

        loss = optimizer.step(forward_backward) if sam is not None else _step_plain(run, forward_backward)
        if run.scaler is not None:
            run.scaler.update()
        num_updates += 1
        if run.model_ema is not None:
            run.model_ema.update(run.model, step=num_updates)
        if args.synchronize_step and run.device.type == "cuda":
            torch.cuda.synchronize()
        last_loss = float(loss)
        loss_sum, updates = loss_sum + last_loss, updates + 1
        samples += total * run.world
        if update_idx % args.log_interval == 0 or update_idx == updates_per_epoch - 1:
            stats = sam.stats if sam is not None else {}
            values = mean_over_replicas([last_loss, *(stats.get(k, math.nan) for k in shown)], run)
            rate = samples / max(time.perf_counter() - start, 1e-9)
            extra = "".join(f"  {k} {v:.4g}" for k, v in zip(shown, values[1:], strict=True) if not math.isnan(v))
            if run.primary:
                logger.info(f"Train: {epoch} [{update_idx + 1:>4d}/{updates_per_epoch}]  loss {values[0]:.4f}  "
                            f"lr {optimizer.param_groups[0]['lr']:.3e}  {rate:.1f} samples/s{extra}")
                if args.save_images and run.output_dir is not None:
                    torchvision.utils.save_image(batches[-1][0], run.output_dir / f"train-batch-{update_idx}.jpg",
                                                 padding=0, normalize=True)
        if run.saver is not None and args.recovery_interval and (update_idx + 1) % args.recovery_interval == 0:
            run.saver.save_recovery(epoch, batch_idx=update_idx)
        if run.lr_scheduler is not None:
            run.lr_scheduler.step_update(num_updates=num_updates)
    if hasattr(optimizer, "sync_lookahead"):
        optimizer.sync_lookahead()  # as timm at each epoch's end: the model ends the epoch on the slow weights
    stats = sam.stats if sam is not None else {}
    means = mean_over_replicas([loss_sum / max(updates, 1), *(stats.get(k, math.nan) for k in shown)], run)
    metrics = OrderedDict(loss=means[0])
    metrics.update((k, v) for k, v in zip(shown, means[1:], strict=True) if not math.isnan(v))
    return metrics


def validate(run: Run, model: nn.Module, loader: Any) -> OrderedDict:
    """Loss, top-1 and top-5 over the (sharded) eval set; ``--tta N`` averages each N consecutive outputs."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=run.device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        for batch in loader:
            x, y = _to_device(run, *batch, mix=False)
            with run.amp():
                output = model(x)
            if isinstance(output, (tuple, list)):
                output = output[0]
            if run.args.tta > 1:
                output = output.unfold(0, run.args.tta, run.args.tta).mean(dim=2)
                y = y[0:y.size(0):run.args.tta]
            k = min(5, output.shape[-1])
            top1, topk = accuracy(output.float(), y, topk=(1, k))
            totals += torch.tensor([criterion(output.float(), y).item(), top1.item() * len(y) / 100,
                                    topk.item() * len(y) / 100, len(y)], dtype=torch.float64, device=run.device)
    if run.distributed:
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    return OrderedDict(loss=loss / n, top1=100 * top1 / n, top5=100 * top5 / n)
