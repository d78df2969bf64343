"""A SAM-aware image classification training script that speaks timm ``train.py``'s flags.

``python -m timm_ext.train --data-dir DATA --dataset '' --model resnet50 --opt xsam --opt-kwargs base=momentum``
(or ``python timm_ext/train.py ...``). timm's own train.py calls ``optimizer.step()`` with no closure,
so a sharpness-aware optimizer cannot do its extra passes there; this script is built on timm's
public API (datasets, loaders, Mixup, schedulers, EMA, checkpoint saver, summary.csv) and runs each
update through the optimizer's closure, so plain optimizers (``--opt sgd``, ``adamw``…) work too.

Options keep train.py's names and defaults (``-c FILE.yaml`` as in timm); the timm options it does not run are
refused with a reason (``timm_ext/training/flags.py``). SAM hyperparameters come as ``--sam-<name>`` flags generated
from the core declarations or through ``--opt-kwargs``; ``--opt-kwargs base=NAME`` picks the base optimizer from
timm's registry. Data parallel: run under ``torchrun``; ``--sam-local-ascent`` gives per-replica ascent.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import logging
import math
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python timm_ext/train.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
from timm.data import resolve_data_config
from timm.layers import convert_splitbn_model, convert_sync_batchnorm, set_fast_norm
from timm.models import clean_state_dict, create_model, resume_checkpoint
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import ModelEmaV3, distribute_bn, random_seed, set_jit_fuser
from torch import nn

import timm_ext  # noqa: F401  (registers the variants)
from timm_ext.training.data import Data, build_data
from timm_ext.training.flags import check_args, parse_args
from timm_ext.training.loop import Run, replica_spread, train_one_epoch, validate
from timm_ext.training.optim import build_optimizer, resolve_lr
from timm_ext.training.outputs import (
    load_checkpoint_entry,
    resolve_resume,
    run_directory,
    start_outputs,
    write_summary,
)
from timm_ext.training.rng import CHECKPOINT_KEY, RunRandomState

_logger = logging.getLogger("timm_ext.train")


def setup_distributed(args: argparse.Namespace) -> tuple[bool, int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', args.local_rank))}"
            torch.cuda.set_device(args.device)
        return True, rank, world
    return False, 0, 1


def build_model(args: argparse.Namespace, device: torch.device, model_dtype: torch.dtype | None,
                distributed: bool, primary: bool) -> tuple[nn.Module, dict]:
    """timm's model set-up: create_model with the model flags, head init, grad checkpointing, split/sync BN, dtype
    and memory format. Returns the model and its resolved data config."""
    in_chans = args.in_chans if args.in_chans is not None else (args.input_size[0] if args.input_size else 3)
    overlay: dict[str, Any] = {}
    if args.pretrained_path:
        overlay["pretrained_cfg_overlay"] = dict(file=args.pretrained_path, num_classes=-1)
    model: Any = create_model(args.model, pretrained=args.pretrained, in_chans=in_chans, num_classes=args.num_classes,
                         drop_rate=args.drop, drop_path_rate=args.drop_path, drop_block_rate=args.drop_block,
                         global_pool=args.gp, bn_momentum=args.bn_momentum, bn_eps=args.bn_eps,
                         checkpoint_path=args.initial_checkpoint, **overlay, **args.model_kwargs)
    with torch.no_grad():
        if args.head_init_scale is not None:
            model.get_classifier().weight.mul_(args.head_init_scale)
            model.get_classifier().bias.mul_(args.head_init_scale)
        if args.head_init_bias is not None:
            model.get_classifier().bias.fill_(args.head_init_bias)
    if args.num_classes is None:
        args.num_classes = model.num_classes
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    data_config = resolve_data_config(vars(args), model=model, verbose=primary)
    if args.split_bn:
        model = convert_splitbn_model(model, max(args.aug_splits, 2))
    model.to(device=device, dtype=model_dtype)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if distributed and args.sync_bn:
        args.dist_bn = ""  # as timm: synchronized statistics need no per-epoch averaging
        model = convert_sync_batchnorm(model)
    return model, data_config


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    """As timm: the dataset, batch sampler or sampler that reshuffles per epoch is told the epoch."""
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def run_epoch(run: Run, data: Data, epoch: int, num_epochs: int) -> tuple[OrderedDict, OrderedDict | None] | None:
    """Train an epoch, average BatchNorm statistics over replicas and, at --val-interval epochs, evaluate the model
    (and its EMA, whose metrics are then the eval metrics, as timm) and write the summary row. Returns the train
    and eval metrics, or None for an epoch timm neither evaluates nor checkpoints."""
    args, model, model_ema = run.args, run.model, run.model_ema
    distributed, primary, world = run.distributed, run.primary, run.world
    _set_loader_epoch(data.train, epoch)
    train_metrics = train_one_epoch(run, epoch, data.train)
    if distributed and args.dist_bn in ("broadcast", "reduce"):
        distribute_bn(model, world, args.dist_bn == "reduce")
    if distributed:
        spread = replica_spread(model)
        if primary:
            _logger.info(f"Epoch {epoch}: replica spread {spread:.3g}")
    completed = epoch + 1
    if primary:
        _logger.info(f"Epoch {epoch}: train loss {train_metrics['loss']:.4f}")
    if completed % args.val_interval != 0 and completed != num_epochs:
        if primary:
            _logger.info(f"Epoch {epoch}: no evaluation or checkpoint (--val-interval {args.val_interval})")
        return None
    eval_metrics = None
    if data.eval is not None:
        evaluated = [("", model)]
        if model_ema is not None and not args.model_ema_force_cpu:  # as timm: a CPU EMA is not evaluated
            if distributed and args.dist_bn in ("broadcast", "reduce"):
                distribute_bn(model_ema.module, world, args.dist_bn == "reduce")
            evaluated.append((" (EMA)", model_ema.module))
        for suffix, evaluated_model in evaluated:
            eval_metrics = validate(run, evaluated_model, data.eval)
            if primary:
                _logger.info(f"Epoch {epoch}{suffix}: eval loss {eval_metrics['loss']:.4f}  "
                             f"top1 {eval_metrics['top1']:.2f}  top5 {eval_metrics['top5']:.2f}")
    if run.output_dir is not None:
        write_summary(args, run.output_dir, epoch, train_metrics, eval_metrics, run.optimizer)
    return train_metrics, eval_metrics


def main(argv: list[str] | None = None) -> OrderedDict | None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, args_text = parse_args(argv)
    variant = check_args(args)
    for module in args.device_modules or ():
        importlib.import_module(module)
    data_dir = args.data_dir or args.data
    if data_dir is None:
        raise SystemExit("give the dataset directory with --data-dir DIR")
    if args.dataset in ("", "folder") and not Path(data_dir).is_dir():
        raise SystemExit(f"--data-dir {data_dir}: no such directory (expected an image folder holding the "
                         f"{args.train_split!r} split)")
    distributed, rank, world = setup_distributed(args)
    if args.aug_repeats and not distributed:
        raise SystemExit(f"--aug-repeats {args.aug_repeats:g}: repeated augmentation shares each sample between "
                         "replicas, so it needs torchrun with 2 or more processes (timm refuses it too)")
    primary = rank == 0
    device = torch.device(args.device)
    if torch.cuda.is_available():  # as timm's train.py: TF32 matrix products, cuDNN autotuning
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    model_dtype = getattr(torch, args.model_dtype) if args.model_dtype else None
    random_seed(args.seed, rank)  # once, where timm seeds: a resume restores the state saved in the checkpoint
    if args.fuser:
        set_jit_fuser(args.fuser)
    if args.fast_norm:
        set_fast_norm()

    model, data_config = build_model(args, device, model_dtype, distributed, primary)
    resolve_lr(args, world, primary)
    optimizer, scaler = build_optimizer(args, model, variant, distributed, device)
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    amp = functools.partial(torch.autocast, device.type, dtype=amp_dtype) if args.amp else contextlib.nullcontext
    resume = resolve_resume(args)
    resume_epoch = None
    if resume:
        resume_epoch = resume_checkpoint(model, resume, optimizer=None if args.no_resume_opt else optimizer,
                                         loss_scaler=None if args.no_resume_opt else scaler, log_info=primary)
    model_ema = None
    if args.model_ema:
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                               device=torch.device("cpu") if args.model_ema_force_cpu else None)
        ema_state = load_checkpoint_entry(resume, "state_dict_ema") if resume else None
        if ema_state is not None:
            model_ema.module.load_state_dict(clean_state_dict(ema_state))
    if args.torchcompile:
        # a compiled Module is an OptimizedModule (a Module); torch's stub types the result as a plain callable
        model = torch.compile(model, backend=args.torchcompile, mode=args.torchcompile_mode)  # type: ignore[assignment]
    ddp_model = model
    if distributed:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                        broadcast_buffers=not args.no_ddp_bb)
    data = build_data(args, data_config, distributed, device, model_dtype)
    random_state = RunRandomState(data.train, data.eval, args.seed)

    eval_metric = args.eval_metric if data.eval is not None else "loss"  # timm: the train loss without eval
    updates_per_epoch = math.ceil(len(data.train) / args.grad_accum_steps)
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric=eval_metric == "loss"),
        updates_per_epoch=updates_per_epoch)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    if lr_scheduler is not None and start_epoch > 0:
        if args.sched_on_updates:
            lr_scheduler.step_update(start_epoch * updates_per_epoch)
        else:
            lr_scheduler.step(start_epoch)
    output_dir = saver = entries = None
    if primary:
        output_dir = run_directory(args, data_config["input_size"])
        saver, entries = start_outputs(args, args_text, output_dir, model, optimizer, model_ema, scaler,
                                       decreasing=eval_metric == "loss", resume=resume)
    run = Run(args=args, model=model, ddp_model=ddp_model, optimizer=optimizer, loss_fn=data.train_loss,
              device=device, model_dtype=model_dtype, amp=amp, scaler=scaler, lr_scheduler=lr_scheduler,
              model_ema=model_ema, mixup=data.mixup, saver=saver, output_dir=output_dir)

    if resume:
        random_state.restore(load_checkpoint_entry(resume, CHECKPOINT_KEY), rank, world)
    eval_metrics: OrderedDict | None = None
    results: list[dict] = []
    best_metric = best_epoch = None
    stop_epoch = min(num_epochs, args.stop_epoch) if args.stop_epoch else num_epochs
    try:
        for epoch in range(start_epoch, stop_epoch):
            metrics = run_epoch(run, data, epoch, num_epochs)
            if metrics is None:  # as timm: no evaluation, no checkpoint in this epoch
                if lr_scheduler is not None:
                    lr_scheduler.step(epoch + 1, None)
                continue
            train_metrics, eval_metrics = metrics
            saved_state = random_state.gather()  # every rank's, into rank 0's checkpoint
            latest_metric = (eval_metrics or train_metrics)[eval_metric]
            if saver is not None and entries is not None:
                entries.random_state = saved_state
                best_metric, best_epoch = saver.save_checkpoint(epoch, metric=latest_metric)
                entries.random_state = None
                if args.save_epochs and epoch + 1 in args.save_epochs:
                    saver.save_milestone(epoch + 1)
            if lr_scheduler is not None:
                lr_scheduler.step(epoch + 1, latest_metric)
            results.append({"epoch": epoch, "train": train_metrics,
                            **({"validation": eval_metrics} if eval_metrics is not None else {})})
    except KeyboardInterrupt:  # as timm: stop, then report what was done
        pass
    if distributed:
        dist.barrier()  # rank 0 may still be writing checkpoints; leave together
        # DDP goes first. Freed after the group left torch's registry, DDP's reducer would drop the group's last
        # reference holding the GIL; the group's destructor joins gloo's worker thread, which may be dropping its
        # last finished work and need the GIL: a deadlock at exit (torch 2.11; 2 of 22 torchrun runs on 2 busy cores).
        del run, ddp_model
        dist.destroy_process_group()
    if best_metric is not None:
        _logger.info(f"*** Best metric: {best_metric} (epoch {best_epoch})")
    if primary:  # timm's parsable summary (its bulk_runner reads it): the 10 best epochs, best last
        ranked = sorted(results, key=lambda r: r.get("validation", r["train"]).get(eval_metric, 0),
                        reverse=eval_metric == "loss")
        print(f"--result\n{json.dumps(ranked[-10:], indent=4)}")
    return eval_metrics


if __name__ == "__main__":
    main()
