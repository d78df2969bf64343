"""A SAM-aware image classification training script that speaks timm ``train.py``'s flags.

``python -m timm_ext.train --data-dir DATA --dataset '' --model resnet50 --opt xsam --opt-kwargs base=momentum``
(or ``python timm_ext/train.py ...``). timm's own train.py calls ``optimizer.step()`` with no closure,
so a sharpness-aware optimizer cannot do its extra passes there; this script is built on timm's
public API (datasets, loaders, Mixup, schedulers, EMA, checkpoint saver, summary.csv) and runs each
update through ``sam_plugins.update``, so plain optimizers (``--opt sgd``, ``adamw``…) work too.

Flags keep train.py's names and defaults. SAM hyperparameters come as ``--sam-<name>`` flags
generated from the core declarations (True-default switches as ``--sam-no-<name>``) or through
``--opt-kwargs``; ``--opt-kwargs base=NAME`` picks the base optimizer from timm's registry.
Data parallel: run under ``torchrun``; ``--sam-local-ascent`` gives per-replica ascent.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import math
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python timm_ext/train.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
from timm.data import Mixup, create_dataset, create_loader, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import create_model, model_parameters, resume_checkpoint
from timm.optim import create_optimizer_v2, list_optimizers, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    CheckpointSaver,
    ModelEmaV3,
    ParseKwargs,
    accuracy,
    dispatch_clip_grad,
    random_seed,
    update_summary,
)
from torch import nn

import sam_plugins
import timm_ext  # noqa: F401  (registers the variants)
from sam_plugins import Hyper, SharpnessAware

_logger = logging.getLogger("timm_ext.train")


def sam_flags() -> dict[str, Hyper]:
    """Every hyperparameter declared by any variant, by flag destination (``sam_<name>``)."""
    flags: dict[str, Hyper] = {}
    for name in sam_plugins.available():
        for h in sam_plugins.get(name).hyperparameters:
            flags.setdefault(h.name, h)
    return flags


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="timm training with sharpness-aware optimizers")
    p.add_argument("data", nargs="?", metavar="DIR", help="path to dataset (positional is deprecated, use --data-dir)")
    group = p.add_argument_group("Dataset")
    group.add_argument("--data-dir", metavar="DIR")
    group.add_argument("--dataset", "-d", default="", help="'' or 'folder' for an ImageFolder, torch/cifar100…")
    group.add_argument("--train-split", default="train")
    group.add_argument("--val-split", default="validation")
    group.add_argument("--dataset-download", action="store_true", default=False)
    group = p.add_argument_group("Model")
    group.add_argument("--model", default="resnet50")
    group.add_argument("--pretrained", action="store_true", default=False)
    group.add_argument("--num-classes", type=int, default=None)
    group.add_argument("--in-chans", type=int, default=None)
    group.add_argument("--img-size", type=int, default=None)
    group.add_argument("--input-size", default=None, nargs=3, type=int)
    group.add_argument("--crop-pct", default=None, type=float)
    group.add_argument("--mean", type=float, nargs="+", default=None)
    group.add_argument("--std", type=float, nargs="+", default=None)
    group.add_argument("--interpolation", default="")
    group.add_argument("-b", "--batch-size", type=int, default=128)
    group.add_argument("-vb", "--validation-batch-size", type=int, default=None)
    group.add_argument("--channels-last", action="store_true", default=False)
    group.add_argument("--grad-accum-steps", type=int, default=1)
    group.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs)
    group.add_argument("--torchcompile", nargs="?", type=str, default=None, const="inductor")
    group.add_argument("--drop", type=float, default=0.0)
    group.add_argument("--drop-path", type=float, default=None)
    group = p.add_argument_group("Optimizer")
    group.add_argument("--opt", default="sgd")
    group.add_argument("--opt-eps", default=None, type=float)
    group.add_argument("--opt-betas", default=None, type=float, nargs="+")
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--weight-decay", type=float, default=2e-5)
    group.add_argument("--clip-grad", type=float, default=None)
    group.add_argument("--clip-mode", default="norm", choices=("norm", "value", "agc"))
    group.add_argument("--layer-decay", type=float, default=None)
    group.add_argument("--opt-kwargs", nargs="*", default={}, action=ParseKwargs)
    group = p.add_argument_group("Sharpness-aware (generated from sam_plugins' declarations)")
    for name, h in sam_flags().items():
        if h.kind is bool:
            flag = f"--sam-no-{name}" if h.default else f"--sam-{name}"
            group.add_argument(flag.replace("_", "-"), dest=f"sam_{name}", action="store_const",
                               const=not h.default, default=None, help=h.help)
        else:
            group.add_argument(f"--sam-{name}".replace("_", "-"), dest=f"sam_{name}", type=h.kind, default=None,
                               choices=h.choices, help=f"{h.help} ({h.allowed()})")
    group.add_argument("--sam-local-ascent", action="store_true", default=False,
                       help="per-replica ascent under DDP (m-sharpness); the final direction is averaged once")
    group = p.add_argument_group("Learning rate schedule")
    group.add_argument("--sched", default="cosine")
    group.add_argument("--sched-on-updates", action="store_true", default=False)
    group.add_argument("--lr", type=float, default=None)
    group.add_argument("--lr-base", type=float, default=0.1)
    group.add_argument("--lr-base-size", type=int, default=256)
    group.add_argument("--lr-base-scale", default="", choices=("", "linear", "sqrt"))
    group.add_argument("--lr-noise", type=float, nargs="+", default=None)
    group.add_argument("--lr-noise-pct", type=float, default=0.67)
    group.add_argument("--lr-noise-std", type=float, default=1.0)
    group.add_argument("--lr-cycle-mul", type=float, default=1.0)
    group.add_argument("--lr-cycle-decay", type=float, default=0.5)
    group.add_argument("--lr-cycle-limit", type=int, default=1)
    group.add_argument("--lr-k-decay", type=float, default=1.0)
    group.add_argument("--warmup-lr", type=float, default=1e-5)
    group.add_argument("--min-lr", type=float, default=0)
    group.add_argument("--epochs", type=int, default=300)
    group.add_argument("--start-epoch", default=None, type=int)
    group.add_argument("--decay-milestones", default=[90, 180, 270], type=int, nargs="+")
    group.add_argument("--decay-epochs", type=float, default=90)
    group.add_argument("--warmup-epochs", type=int, default=5)
    group.add_argument("--warmup-prefix", action="store_true", default=False)
    group.add_argument("--cooldown-epochs", type=int, default=0)
    group.add_argument("--patience-epochs", type=int, default=10)
    group.add_argument("--decay-rate", "--dr", type=float, default=0.1)
    group = p.add_argument_group("Augmentation and regularization")
    group.add_argument("--no-aug", action="store_true", default=False)
    group.add_argument("--scale", type=float, nargs="+", default=[0.08, 1.0])
    group.add_argument("--ratio", type=float, nargs="+", default=[3.0 / 4.0, 4.0 / 3.0])
    group.add_argument("--hflip", type=float, default=0.5)
    group.add_argument("--vflip", type=float, default=0.0)
    group.add_argument("--color-jitter", type=float, default=0.4)
    group.add_argument("--aa", default=None)
    group.add_argument("--reprob", type=float, default=0.0)
    group.add_argument("--remode", default="pixel")
    group.add_argument("--recount", type=int, default=1)
    group.add_argument("--mixup", type=float, default=0.0)
    group.add_argument("--cutmix", type=float, default=0.0)
    group.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    group.add_argument("--mixup-prob", type=float, default=1.0)
    group.add_argument("--mixup-switch-prob", type=float, default=0.5)
    group.add_argument("--mixup-mode", default="batch")
    group.add_argument("--mixup-off-epoch", default=0, type=int)
    group.add_argument("--smoothing", type=float, default=0.1)
    group.add_argument("--train-interpolation", default="random")
    group = p.add_argument_group("Model EMA")
    group.add_argument("--model-ema", action="store_true", default=False)
    group.add_argument("--model-ema-decay", type=float, default=0.9998)
    group.add_argument("--model-ema-warmup", action="store_true")
    group = p.add_argument_group("Miscellaneous")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--log-interval", type=int, default=50)
    group.add_argument("--checkpoint-hist", type=int, default=10)
    group.add_argument("-j", "--workers", type=int, default=4)
    group.add_argument("--pin-mem", action="store_true", default=False)
    group.add_argument("--output", default="")
    group.add_argument("--experiment", default="")
    group.add_argument("--eval-metric", default="top1")
    group.add_argument("--resume", default="")
    group.add_argument("--no-resume-opt", action="store_true", default=False)
    group.add_argument("--amp", action="store_true", default=False)
    group.add_argument("--amp-dtype", default="float16", choices=("float16", "bfloat16"))
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


class CheckpointedGradScaler(torch.amp.GradScaler):
    """torch's GradScaler under the checkpoint key timm's CheckpointSaver and resume_checkpoint use."""

    state_dict_key = "amp_scaler"


def sam_kwargs(args: argparse.Namespace, variant: type[SharpnessAware]) -> dict[str, Any]:
    """The variant's hyperparameters given as --sam-* flags (unset flags keep the declared defaults)."""
    declared = {h.name for h in variant.hyperparameters}
    given = {name: getattr(args, f"sam_{name}") for name in sam_flags() if getattr(args, f"sam_{name}") is not None}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise SystemExit(f"--opt {variant.name} has no hyperparameter(s) {unknown}; it declares {sorted(declared)}")
    return given


def check_args(args: argparse.Namespace) -> type[SharpnessAware] | None:
    """Fail fast with a clear message; returns the variant class for SAM optimizers."""
    parts = args.opt.lower().split("_")
    if len(parts) > 1 and parts[-1] in sam_plugins.available() and parts[:-1] != ["lookahead"]:
        raise SystemExit(f"--opt {args.opt}: timm's only optimizer wrapper is lookahead_ (it forwards the closure); "
                         f"use --opt {parts[-1]} or --opt lookahead_{parts[-1]}")
    known = list_optimizers()
    if parts[-1] not in known:
        near = difflib.get_close_matches(parts[-1], known, n=3)
        raise SystemExit(f"--opt {args.opt}: unknown optimizer {parts[-1]!r}"
                         + (f"; did you mean {', '.join(near)}?" if near else "; see timm.optim.list_optimizers()"))
    if args.grad_accum_steps < 1:
        raise SystemExit(f"--grad-accum-steps {args.grad_accum_steps} is invalid; allowed: an int >= 1")
    variant = sam_plugins.get(parts[-1]) if parts[-1] in sam_plugins.available() else None
    if variant is None and any(getattr(args, f"sam_{n}") is not None for n in sam_flags()):
        raise SystemExit(f"--sam-* flags need a sharpness-aware --opt (one of {sam_plugins.available()})")
    if variant is not None and args.clip_grad is not None and args.clip_mode != "norm":
        raise SystemExit(f"--clip-mode {args.clip_mode} is not supported with --opt {args.opt}: the final direction "
                         "is clipped by norm (--clip-mode norm)")
    return variant


def setup_distributed(args: argparse.Namespace) -> tuple[bool, int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
        return True, rank, world
    return False, 0, 1


def mean_over_replicas(values: list[float], distributed: bool, device: torch.device) -> list[float]:
    """Averages of per-replica values (logged metrics), like timm's reduce_tensor; one all-reduce."""
    if not distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def sharpness_aware(optimizer: torch.optim.Optimizer) -> SharpnessAware | None:
    """The sharpness-aware optimizer itself, or the one timm's Lookahead wraps (it forwards the closure)."""
    for candidate in (optimizer, getattr(optimizer, "_base_optimizer", None)):
        if isinstance(candidate, SharpnessAware):
            return candidate
    return None


def train_one_epoch(epoch: int, model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                    args: argparse.Namespace, device: torch.device, lr_scheduler: Any, model_ema: ModelEmaV3 | None,
                    mixup: Mixup | None, amp: Any, scaler: Any, ddp_model: nn.Module,
                    distributed: bool, world: int) -> OrderedDict:
    """One epoch; each update covers ``--grad-accum-steps`` micro-batches, all replayed by SAM variants."""
    model.train()
    sam = sharpness_aware(optimizer)
    is_sam = sam is not None
    if sam is not None:
        sam.begin_epoch(epoch)
    if mixup is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
        mixup.mixup_enabled = False
    shown = ("alpha", "sharpness") if is_sam else ()
    updates_per_epoch = math.ceil(len(loader) / args.grad_accum_steps)
    num_updates = epoch * updates_per_epoch
    loss_sum, updates, start, samples = 0.0, 0, time.perf_counter(), 0
    iterator = iter(loader)
    for update_idx in range(updates_per_epoch):
        batches = []
        for _ in range(args.grad_accum_steps):
            try:
                x, y = next(iterator)
            except StopIteration:
                break
            x, y = x.to(device), y.to(device)
            if mixup is not None:
                x, y = mixup(x, y)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batches.append((x, y))
        if not batches:
            break
        total = sum(len(x) for x, _ in batches)

        def forward_backward(batches: list = batches, total: int = total) -> torch.Tensor:
            """Loss and gradient of all micro-batches of this update, each weighted by its share."""
            loss_sum = torch.zeros((), device=device)
            for i, (x, y) in enumerate(batches):
                local = distributed and (i < len(batches) - 1 or (sam is not None and not sam.sync_gradients))
                with ddp_model.no_sync() if local else contextlib.nullcontext():
                    with amp:
                        loss = loss_fn(ddp_model(x), y) * (len(x) / total)
                    if sam is not None:
                        sam.backward(loss)
                    else:
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                loss_sum = loss_sum + loss.detach().float()
            return loss_sum

        if is_sam:
            loss = optimizer.step(forward_backward)
        else:
            optimizer.zero_grad()
            loss = forward_backward()
            if scaler is not None:
                scaler.unscale_(optimizer)
            if args.clip_grad is not None:
                # As timm: adaptive clipping leaves the classifier head out.
                dispatch_clip_grad(model_parameters(model, exclude_head=args.clip_mode == "agc"), args.clip_grad,
                                   mode=args.clip_mode)
            if scaler is not None:
                scaler.step(optimizer)
            else:
                optimizer.step()
        if scaler is not None:
            scaler.update()
        num_updates += 1
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates)
        last_loss = float(loss)
        loss_sum, updates = loss_sum + last_loss, updates + 1
        samples += total * world
        if update_idx % args.log_interval == 0 or update_idx == updates_per_epoch - 1:
            stats = sam.stats if sam is not None else {}
            values = mean_over_replicas([last_loss, *(stats.get(k, math.nan) for k in shown)], distributed, device)
            rate = samples / max(time.perf_counter() - start, 1e-9)
            extra = "".join(f"  {k} {v:.4g}" for k, v in zip(shown, values[1:], strict=True) if not math.isnan(v))
            if not distributed or dist.get_rank() == 0:
                _logger.info(f"Train: {epoch} [{update_idx + 1:>4d}/{updates_per_epoch}]  loss {values[0]:.4f}  "
                             f"lr {optimizer.param_groups[0]['lr']:.3e}  {rate:.1f} samples/s{extra}")
    stats = sam.stats if sam is not None else {}
    means = mean_over_replicas([loss_sum / max(updates, 1), *(stats.get(k, math.nan) for k in shown)],
                               distributed, device)
    metrics = OrderedDict(loss=means[0])
    metrics.update((k, v) for k, v in zip(shown, means[1:], strict=True) if not math.isnan(v))
    return metrics


def replica_spread(model: nn.Module) -> float:
    """Largest difference of any parameter between data-parallel replicas (0.0: identical)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max())


def validate(model: nn.Module, loader: Any, device: torch.device, amp: contextlib.AbstractContextManager,
             args: argparse.Namespace, distributed: bool) -> OrderedDict:
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                output = model(x)
            k = min(5, output.shape[-1])
            top1, topk = accuracy(output.float(), y, topk=(1, k))
            totals += torch.tensor([criterion(output.float(), y).item(), top1.item() * len(y) / 100,
                                    topk.item() * len(y) / 100, len(y)], dtype=torch.float64, device=device)
    if distributed:
        dist.all_reduce(totals)
    loss, top1, top5, n = totals.tolist()
    return OrderedDict(loss=loss / n, top1=100 * top1 / n, top5=100 * top5 / n)


def build_optimizer(args: argparse.Namespace, model: nn.Module, variant: type[SharpnessAware] | None,
                    distributed: bool, device: torch.device) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer from timm's registry and, for fp16 AMP, the GradScaler (SAM variants drive it)."""
    flags = optimizer_kwargs(cfg=args)
    if variant is not None:
        flags.update(sam_kwargs(args, variant))
    duplicated = sorted(set(flags) & set(args.opt_kwargs))
    if duplicated:
        raise SystemExit(f"--opt-kwargs {' '.join(f'{k}={args.opt_kwargs[k]}' for k in duplicated)}: already set by "
                         "its own flag (timm refuses such duplicates too); give each value once")
    opt_kwargs = {**flags, **args.opt_kwargs}
    scaler = CheckpointedGradScaler(device.type) if args.amp and args.amp_dtype == "float16" else None
    if variant is not None:
        opt_kwargs.update(model=model, distributed=sam_plugins.Distributed(local_ascent=args.sam_local_ascent)
                          if distributed else None)
        if args.clip_grad is not None:
            opt_kwargs["max_grad_norm"] = args.clip_grad
        if scaler is not None:
            opt_kwargs["grad_scaler"] = scaler
    try:
        return create_optimizer_v2(model, **opt_kwargs), scaler
    except (ValueError, TypeError) as err:
        raise SystemExit(f"--opt {args.opt}: {err}") from None


def resolve_lr(args: argparse.Namespace, world: int, rank: int) -> None:
    """timm's rule when --lr is not given: lr = lr_base × (global batch / lr_base_size), square-rooted for
    adaptive optimizers (a name containing 'ada' or 'lamb'; for a SAM variant, its base's name)."""
    if args.lr:
        return
    global_batch = args.batch_size * world * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    name = args.opt.lower()
    if name in sam_plugins.available():
        name = str(args.opt_kwargs.get("base", "sgd")).lower()
    scale = args.lr_base_scale or ("sqrt" if "ada" in name or "lamb" in name else "linear")
    args.lr = args.lr_base * (ratio**0.5 if scale == "sqrt" else ratio)
    if rank == 0:
        _logger.info(f"lr {args.lr:g}: --lr-base {args.lr_base:g} scaled ({scale}) by the global batch "
                     f"{global_batch} / --lr-base-size {args.lr_base_size}")


def build_data(args: argparse.Namespace, data_config: dict, distributed: bool,
               device: torch.device) -> tuple[Any, Any, Mixup | None, nn.Module]:
    """Train and eval loaders from timm's datasets and transforms, Mixup/CutMix, and the train loss; no
    eval loader when --val-split is empty."""
    data_dir = args.data_dir or args.data
    image_mode = "RGB" if data_config["input_size"][0] == 3 else "L"
    dataset_train = create_dataset(args.dataset, root=data_dir, split=args.train_split, is_training=True,
                                   download=args.dataset_download, batch_size=args.batch_size, seed=args.seed,
                                   input_img_mode=image_mode)
    mixup = None
    if args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None:
        mixup = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                      prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                      label_smoothing=args.smoothing, num_classes=args.num_classes)
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, scale=args.scale,
        ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter, auto_augment=args.aa,
        interpolation=args.train_interpolation, mean=data_config["mean"], std=data_config["std"],
        num_workers=args.workers, distributed=distributed, pin_memory=args.pin_mem, use_prefetcher=False,
        device=device)
    loader_eval = None
    if args.val_split:
        dataset_eval = create_dataset(args.dataset, root=data_dir, split=args.val_split, is_training=False,
                                      download=args.dataset_download, batch_size=args.batch_size,
                                      input_img_mode=image_mode)
        loader_eval = create_loader(
            dataset_eval, input_size=data_config["input_size"],
            batch_size=args.validation_batch_size or args.batch_size, is_training=False,
            interpolation=data_config["interpolation"], mean=data_config["mean"], std=data_config["std"],
            num_workers=args.workers, distributed=distributed, crop_pct=data_config["crop_pct"],
            pin_memory=args.pin_mem, use_prefetcher=False, device=device)
    if mixup is not None:
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    elif args.smoothing:
        loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()
    return loader_train, loader_eval, mixup, loss_fn


def main(argv: list[str] | None = None) -> OrderedDict | None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    variant = check_args(args)
    data_dir = args.data_dir or args.data
    if data_dir is None:
        raise SystemExit("give the dataset directory with --data-dir DIR")
    if args.dataset in ("", "folder") and not Path(data_dir).is_dir():
        raise SystemExit(f"--data-dir {data_dir}: no such directory (expected an image folder holding the "
                         f"{args.train_split!r} split)")
    distributed, rank, world = setup_distributed(args)
    device = torch.device(args.device)
    random_seed(args.seed, rank)

    in_chans = args.in_chans or (args.input_size[0] if args.input_size is not None else 3)
    model = create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes, in_chans=in_chans,
                         drop_rate=args.drop, drop_path_rate=args.drop_path, **args.model_kwargs)
    if args.num_classes is None:
        args.num_classes = model.num_classes
    data_config = resolve_data_config(vars(args), model=model, verbose=rank == 0)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    resolve_lr(args, world, rank)
    optimizer, scaler = build_optimizer(args, model, variant, distributed, device)
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    amp = torch.autocast(device.type, dtype=amp_dtype) if args.amp else contextlib.nullcontext()
    resume_epoch = None
    if args.resume:
        resume_epoch = resume_checkpoint(model, args.resume, optimizer=None if args.no_resume_opt else optimizer,
                                         loss_scaler=None if args.no_resume_opt else scaler, log_info=rank == 0)
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
        if args.model_ema else None
    if model_ema is not None and args.resume:
        checkpoint = torch.load(args.resume, map_location="cpu", weights_only=True)
        if "state_dict_ema" in checkpoint:
            model_ema.module.load_state_dict(checkpoint["state_dict_ema"])
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)
    ddp_model = nn.parallel.DistributedDataParallel(model) if distributed else model
    loader_train, loader_eval, mixup, train_loss_fn = build_data(args, data_config, distributed, device)

    eval_metric = args.eval_metric if loader_eval is not None else "loss"  # timm: the train loss without eval
    updates_per_epoch = math.ceil(len(loader_train) / args.grad_accum_steps)
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric=eval_metric == "loss"),
        updates_per_epoch=updates_per_epoch)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)

    output_dir = None
    saver = None
    if rank == 0 and args.output:
        output_dir = Path(args.output) / (args.experiment or f"{args.model}-{args.opt}")
        output_dir.mkdir(parents=True, exist_ok=True)
        saver = CheckpointSaver(model=model, optimizer=optimizer, args=None, model_ema=model_ema, amp_scaler=scaler,
                                checkpoint_dir=str(output_dir), recovery_dir=str(output_dir),
                                decreasing=eval_metric == "loss", max_history=args.checkpoint_hist)
    eval_metrics: OrderedDict | None = None
    for epoch in range(start_epoch, num_epochs):
        random_seed(args.seed + 1000 * epoch, rank)  # torch, numpy and random: augmentations too
        if distributed and hasattr(loader_train.sampler, "set_epoch"):
            loader_train.sampler.set_epoch(epoch)
        train_metrics = train_one_epoch(epoch, model, loader_train, optimizer, train_loss_fn, args, device,
                                        lr_scheduler, model_ema, mixup, amp, scaler, ddp_model, distributed, world)
        if distributed:
            spread = replica_spread(model)
            if rank == 0:
                _logger.info(f"Epoch {epoch}: replica spread {spread:.3g}")
        eval_metrics = None
        if loader_eval is not None:
            evaluated = [("", model)] + ([(" (EMA)", model_ema.module)] if model_ema is not None else [])
            for suffix, evaluated_model in evaluated:
                eval_metrics = validate(evaluated_model, loader_eval, device, amp, args, distributed)
                if rank == 0:
                    _logger.info(f"Epoch {epoch}{suffix}: eval loss {eval_metrics['loss']:.4f}  "
                                 f"top1 {eval_metrics['top1']:.2f}  top5 {eval_metrics['top5']:.2f}")
        if rank == 0:
            _logger.info(f"Epoch {epoch}: train loss {train_metrics['loss']:.4f}")
        # As timm: with --model-ema the EMA's metrics are the eval metrics (summary, model_best, plateau).
        latest_metric = (eval_metrics or train_metrics)[eval_metric]
        if output_dir is not None:
            lrs = [group["lr"] for group in optimizer.param_groups]
            update_summary(epoch, train_metrics, eval_metrics, filename=str(output_dir / "summary.csv"),
                           lr=sum(lrs) / len(lrs))
        if saver is not None:
            saver.save_checkpoint(epoch, metric=latest_metric)
        if lr_scheduler is not None:
            lr_scheduler.step(epoch + 1, latest_metric)
    if distributed:
        dist.barrier()  # rank 0 may still be writing checkpoints; leave together
        dist.destroy_process_group()
    return eval_metrics


if __name__ == "__main__":
    main()
