"""fairseq checkpoints hold configs (omegaconf, argparse) besides tensors. With torch ≥ 2.6,
``torch.load`` defaults to ``weights_only=True`` and refuses them; instead of switching that off
process-wide, fairseq's loaders run with exactly the classes its checkpoints need allowed."""

from __future__ import annotations

import argparse
import collections
import functools
import typing
from typing import Any

import torch
from fairseq import checkpoint_utils


def checkpoint_globals() -> list[Any]:
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any,
            dict, list, int, collections.defaultdict]


def allow_fairseq_checkpoints() -> None:
    """Wrap fairseq's two checkpoint readers (resume, generate, ... and ``--ema-seed-model``) in
    ``torch.serialization.safe_globals`` (idempotent)."""
    for name in ("load_checkpoint_to_cpu", "load_ema_from_checkpoint"):
        original = getattr(checkpoint_utils, name)
        if getattr(original, "_sam_plugins", False):
            continue
        setattr(checkpoint_utils, name, _with_checkpoint_globals(original))


def _with_checkpoint_globals(reader: Any) -> Any:
    @functools.wraps(reader)
    def read(*args: Any, **kwargs: Any) -> Any:
        with torch.serialization.safe_globals(checkpoint_globals()):
            return reader(*args, **kwargs)

    read._sam_plugins = True  # type: ignore[attr-defined]
    return read
