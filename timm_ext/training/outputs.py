"""Where a run writes, as timm's train.py does: ``<--output or ./output/train>/<--experiment or date-model-size>``
holding args.yaml, summary.csv and the checkpoints (which carry the args); ``--resume auto``; wandb."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from timm.models import safe_model_name
from timm.utils import CheckpointSaver, get_state_dict, unwrap_model, update_summary
from torch import nn

from .rng import CHECKPOINT_KEY

logger = logging.getLogger("timm_ext.train")
DEFAULT_OUTPUT = "./output/train"


def run_directory(args: argparse.Namespace, input_size: tuple[int, ...]) -> Path:
    """timm's run directory; the date-stamped default name is fixed once, when the args are parsed."""
    name = args.experiment or "-".join([datetime.now().strftime("%Y%m%d-%H%M%S"), safe_model_name(args.model),
                                        str(input_size[-1])])
    return Path(args.output or DEFAULT_OUTPUT) / name


def resolve_resume(args: argparse.Namespace) -> str:
    """``--resume auto``: the run directory's last.pth.tar when it exists, else a fresh start."""
    if args.resume != "auto":
        return args.resume
    last = Path(args.output or DEFAULT_OUTPUT) / args.experiment / "last.pth.tar"
    if last.is_file():
        logger.info(f"--resume auto: resuming from {last}")
        return str(last)
    logger.info(f"--resume auto: no {last} yet, starting fresh")
    return ""


def load_checkpoint_entry(path: str, key: str) -> Any:
    """One entry of a timm training checkpoint (None if absent); its pickled args are allowed, nothing else."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint.get(key) if isinstance(checkpoint, dict) else None


class CheckpointEntries:
    """The model, its EMA and, in epoch checkpoints, the run's random state: the entries timm's CheckpointSaver asks
    its ``task`` for (timm's train.py hands it its training task there)."""

    def __init__(self, model: nn.Module, model_ema: nn.Module | None) -> None:
        self.model, self.model_ema = model, model_ema
        self.random_state: list | None = None  # set by the loop for the length of an epoch checkpoint's save

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn: Any = unwrap_model) -> dict[str, Any]:
        if ema:
            return {} if self.model_ema is None else {"state_dict_ema": get_state_dict(self.model_ema, unwrap_fn)}
        state: dict[str, Any] = {"state_dict": get_state_dict(self.model, unwrap_fn)}
        if self.random_state is not None:
            state[CHECKPOINT_KEY] = self.random_state
        return state


def start_outputs(args: argparse.Namespace, args_text: str, directory: Path, model: nn.Module,
                  optimizer: torch.optim.Optimizer, model_ema: nn.Module | None, scaler: Any, decreasing: bool,
                  resume: str) -> tuple[CheckpointSaver, CheckpointEntries]:
    """Creates the run directory with args.yaml (``-c args.yaml`` re-creates the run) and timm's checkpoint saver;
    resuming from this directory restores the saver's ranked history, so eviction and model_best continue."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "args.yaml").write_text(args_text)
    entries = CheckpointEntries(model, model_ema)
    saver = CheckpointSaver(model=model, optimizer=optimizer, args=args, model_ema=model_ema, amp_scaler=scaler,
                            checkpoint_dir=str(directory), recovery_dir=str(directory), decreasing=decreasing,
                            max_history=args.checkpoint_hist, task=entries)
    if resume and Path(resume).resolve().parent == directory.resolve():
        saver.load_state_dict_from_checkpoint(resume)
    if args.log_wandb:
        import wandb

        wandb.init(project=args.wandb_project, name=directory.name, config=args, tags=args.wandb_tags,
                   resume="must" if args.wandb_resume_id else None, id=args.wandb_resume_id or None)
    return saver, entries


def write_summary(args: argparse.Namespace, directory: Path, epoch: int, train_metrics: dict,
                  eval_metrics: dict | None, optimizer: torch.optim.Optimizer) -> None:
    """One summary.csv row (and wandb log); timm writes the header only when the file is new, so a resume appends."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    update_summary(epoch, train_metrics, eval_metrics, filename=str(directory / "summary.csv"), lr=sum(lrs) / len(lrs),
                   log_wandb=args.log_wandb)
