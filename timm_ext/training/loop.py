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
from timm.utils import AverageMeter, CheckpointSaver, ModelEmaV3, accuracy, dispatch_clip_grad, reduce_tensor
from torch import nn

from sam_plugins import SharpnessAware

logger = logging.getLogger("timm_ext.train")


@dataclass
class Run:
    """What the loop needs, built once by ``timm_ext.train.main``."""

    args: argparse.Namespace
    model: nn.Module
    ddp_model: Any  # the model under DDP (the model itself in one process)
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


def _step_plain(run: Run, forward_backward: Any) -> None:
    """A plain optimizer's update as timm makes it: backward, unscale, clip (agc leaves the head out), step."""
    forward_backward()
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    if run.args.clip_grad is not None:
        parameters = model_parameters(run.model, exclude_head=run.args.clip_mode == "agc")
        dispatch_clip_grad(parameters, run.args.clip_grad, mode=run.args.clip_mode)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
    else:
        run.optimizer.step()


def train_one_epoch(run: Run, epoch: int, loader: Any) -> OrderedDict:
    """One epoch; each update covers ``--grad-accum-steps`` micro-batches, all replayed by SAM variants. Losses,
    gradients and the logged train loss are computed as timm's train.py computes them, to the last bit."""
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
    second_order = bool(getattr(optimizer, "is_second_order", False))  # timm: adahessian's backward keeps the graph
    shown = ("alpha", "sharpness") if sam is not None else ()
    updates_per_epoch = math.ceil(len(loader) / args.grad_accum_steps)
    num_updates = epoch * updates_per_epoch
    losses, start, samples = AverageMeter(), time.perf_counter(), 0
    optimizer.zero_grad()
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
        logged: list[tuple[float, int]] = []  # pass 0's micro-batch losses, as timm logs them

        def forward_backward(batches: list = batches, logged: list = logged) -> torch.Tensor:
            """Loss and gradient of all micro-batches of this update, each loss divided by their number (as timm)."""
            first_pass = not logged
            loss_sum = torch.zeros((), device=run.device)
            for i, (x, y) in enumerate(batches):
                local = run.distributed and (i < len(batches) - 1 or (sam is not None and not sam.sync_gradients))
                with run.ddp_model.no_sync() if local else contextlib.nullcontext():
                    with run.amp():
                        loss = run.loss_fn(run.ddp_model(x), y)
                    if len(batches) > 1:
                        loss = loss / len(batches)
                    if sam is not None:
                        sam.backward(loss)
                    else:
                        scaled = run.scaler.scale(loss) if run.scaler is not None else loss
                        scaled.backward(create_graph=second_order)
                if first_pass:
                    logged.append((loss.item() * len(batches), len(x)))
                loss_sum = loss_sum + loss.detach().float()
            return loss_sum

        if sam is not None:  # torch's stub types a closure's result as float; the loss tensor is what torch returns
            optimizer.step(forward_backward)  # type: ignore[arg-type]
        else:
            _step_plain(run, forward_backward)
        if run.scaler is not None:
            run.scaler.update()
        for value, size in logged:
            losses.update(value, size)
        num_updates += 1
        optimizer.zero_grad()  # as timm, right after the step: Lookahead's epoch-end sync then finds no gradient
        if run.model_ema is not None:
            run.model_ema.update(run.model, step=num_updates)
        if args.synchronize_step and run.device.type == "cuda":
            torch.cuda.synchronize()
        samples += sum(len(x) for x, _ in batches) * run.world
        if update_idx % args.log_interval == 0 or update_idx == updates_per_epoch - 1:
            stats = sam.stats if sam is not None else {}
            values = mean_over_replicas([losses.val, losses.avg, *(stats.get(k, math.nan) for k in shown)], run)
            rate = samples / max(time.perf_counter() - start, 1e-9)
            extra = "".join(f"  {k} {v:.4g}" for k, v in zip(shown, values[2:], strict=True) if not math.isnan(v))
            if run.primary:
                logger.info(f"Train: {epoch} [{update_idx + 1:>4d}/{updates_per_epoch}]  loss {values[0]:.4f} "
                            f"({values[1]:.4f})  lr {optimizer.param_groups[0]['lr']:.3e}  {rate:.1f} samples/s{extra}")
                if args.save_images and run.output_dir is not None:
                    torchvision.utils.save_image(batches[-1][0], run.output_dir / f"train-batch-{update_idx}.jpg",
                                                 padding=0, normalize=True)
        if run.saver is not None and args.recovery_interval and (update_idx + 1) % args.recovery_interval == 0:
            run.saver.save_recovery(epoch, batch_idx=update_idx)
        if run.lr_scheduler is not None:
            run.lr_scheduler.step_update(num_updates=num_updates, metric=losses.avg)
    if hasattr(optimizer, "sync_lookahead"):
        optimizer.sync_lookahead()  # as timm; with the gradients already cleared it leaves every weight as it is
    loss_avg = losses.avg
    if run.distributed:  # as timm: each replica's mean, averaged in float32
        loss_avg = reduce_tensor(torch.tensor([loss_avg], dtype=torch.float32, device=run.device), run.world).item()
    stats = sam.stats if sam is not None else {}
    means = mean_over_replicas([stats.get(k, math.nan) for k in shown], run)
    metrics = OrderedDict(loss=loss_avg)
    metrics.update((k, v) for k, v in zip(shown, means, strict=True) if not math.isnan(v))
    return metrics


def validate(run: Run, model: nn.Module, loader: Any) -> OrderedDict:
    """Loss, top-1 and top-5 as timm's train.py computes them: per-batch values (averaged over replicas) weighted by
    the batch size; ``--tta N`` averages each N consecutive outputs. Top-5 is top-k for fewer than 5 classes."""
    model.eval()
    losses, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    criterion = nn.CrossEntropyLoss()
    with torch.inference_mode():
        for batch in loader:
            x, y = _to_device(run, batch[0], batch[1], mix=False)
            with run.amp():
                output = model(x)
                if isinstance(output, (tuple, list)):
                    output = output[0]
                if run.args.tta > 1:
                    output = output.unfold(0, run.args.tta, run.args.tta).mean(dim=2)
                    y = y[0:y.size(0):run.args.tta]
                loss = criterion(output, y)
            acc1, acc5 = accuracy(output, y, topk=(1, min(5, output.shape[-1])))
            if run.distributed:
                loss, acc1, acc5 = (reduce_tensor(t, run.world) for t in (loss.detach(), acc1, acc5))
            losses.update(loss.item(), output.shape[0])
            top1.update(acc1.item(), output.shape[0])
            top5.update(acc5.item(), output.shape[0])
    return OrderedDict(loss=losses.avg, top1=top1.avg, top5=top5.avg)
