"""fairseq checkpoints hold configs (omegaconf, argparse) besides tensors. With torch ≥ 2.6,
``torch.load`` defaults to ``weights_only=True`` and refuses them; instead of switching that off
process-wide, fairseq's loader runs with exactly the classes its checkpoints need allowed."""

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
    """Wrap fairseq's checkpoint reader in ``torch.serialization.safe_globals`` (idempotent)."""
    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_sam_plugins", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(*args: Any, **kwargs: Any) -> Any:
        with torch.serialization.safe_globals(checkpoint_globals()):
            return original(*args, **kwargs)

    load_checkpoint_to_cpu._sam_plugins = True  # type: ignore[attr-defined]
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
