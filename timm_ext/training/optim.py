"""The optimizer from timm's registry (sharpness-aware variants included), timm's learning-rate rule, and the fp16
loss scaler that sharpness-aware variants drive themselves."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch
from timm.optim import create_optimizer_v2, optimizer_kwargs
from torch import nn

import sam_plugins
from sam_plugins import SharpnessAware

from .flags import sam_kwargs

logger = logging.getLogger("timm_ext.train")


class CheckpointedGradScaler(torch.amp.GradScaler):
    """torch's GradScaler under the checkpoint key timm's CheckpointSaver and resume_checkpoint use."""

    state_dict_key = "amp_scaler"


def resolve_lr(args: argparse.Namespace, world: int, primary: bool) -> None:
    """timm's rule when --lr is not given: lr = lr_base × (global batch / lr_base_size), square-rooted for
    adaptive optimizers (a name containing 'ada' or 'lamb'; for a SAM variant, its base's name)."""
    if args.lr:
        return
    global_batch = args.batch_size * world * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    name = args.opt.lower()
    if name.split("_")[-1] in sam_plugins.available():
        name = str(args.opt_kwargs.get("base", "sgd")).lower()
    scale = args.lr_base_scale or ("sqrt" if "ada" in name or "lamb" in name else "linear")
    args.lr = args.lr_base * (ratio**0.5 if scale == "sqrt" else ratio)
    if primary:
        logger.info(f"lr {args.lr:g}: --lr-base {args.lr_base:g} scaled ({scale}) by the global batch "
                    f"{global_batch} / --lr-base-size {args.lr_base_size}")


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
    if scaler is not None and device.type != "cuda":
        logger.warning(f"--amp fp16 on {device.type}: gradients are loss-scaled by a GradScaler here, where timm's "
                       "train.py scales only on CUDA (fp16 gradients underflow without it)")
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
