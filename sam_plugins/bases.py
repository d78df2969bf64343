"""Base optimizers by name. The SAM engine builds the base over the same param groups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

BaseSpec = str | Callable[..., torch.optim.Optimizer]

BASES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "rmsprop": torch.optim.RMSprop,
}


def resolve_base(base: Any) -> Callable[..., torch.optim.Optimizer]:
    """A base name (case-insensitive) or an optimizer class / factory taking ``(params, **kwargs)``."""
    if isinstance(base, str):
        try:
            return BASES[base.lower()]
        except KeyError:
            raise ValueError(f"unknown base optimizer {base!r}; choose one of {sorted(BASES)} "
                             "or pass a torch.optim.Optimizer class") from None
    if callable(base):
        return base
    raise ValueError(f"base must be a name in {sorted(BASES)} or an optimizer class, got {base!r}")
