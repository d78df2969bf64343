"""Every sam_plugins variant in timm's optimizer registry.

``timm.optim.create_optimizer_v2(model, opt="xsam", lr=..., weight_decay=..., base="adamw", rho=...)``
builds timm's param groups (weight-decay split, layer decay) and hands them to the variant, whose
base optimizer is looked up by name in timm's own registry (``base="sgd"`` is timm's Nesterov SGD,
``"momentum"`` classical momentum, ``"adamw"``…) over the same groups, so timm's schedulers work.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from timm.optim._optim_factory import OptimInfo, default_registry

import sam_plugins
from sam_plugins import SharpnessAware


def timm_base(name: str) -> tuple[Callable[..., torch.optim.Optimizer], OptimInfo]:
    """A base optimizer from timm's registry, with its registered defaults bound."""
    if name.lower() in sam_plugins.available():
        raise ValueError(f"base={name!r} is itself a sharpness-aware variant; choose a plain optimizer "
                         f"such as 'sgd', 'momentum' or 'adamw'")
    try:
        info = default_registry.get_optimizer_info(name)
    except ValueError:
        plain = sorted(n for n in default_registry.list_optimizers()
                       if "_" not in n and n not in sam_plugins.available())
        near = difflib.get_close_matches(name.lower(), plain, n=3)
        raise ValueError(f"unknown base optimizer {name!r}; "
                         + (f"did you mean {', '.join(near)}? " if near else "")
                         + f"timm's plain optimizers: {', '.join(plain)}") from None
    if info.second_order:
        raise ValueError(f"base={name!r} is a second-order optimizer (its update needs the backward graph kept); "
                         "sharpness-aware variants take first-order bases only, such as 'sgd', 'momentum' or 'adamw'")
    return default_registry.get_optimizer_class(info, bind_defaults=True), info


def variant_factory(variant: type[SharpnessAware]) -> Callable[..., SharpnessAware]:
    """The constructor timm calls: ``(params, base="sgd", lr=..., weight_decay=..., **kwargs)``."""

    def build(params: Any, base: str = "sgd", **kwargs: Any) -> SharpnessAware:
        base_cls, info = timm_base(base)
        supported = {"momentum": info.has_momentum, "eps": info.has_eps, "betas": info.has_betas}
        kwargs = {k: v for k, v in kwargs.items() if supported.get(k, True)}
        optimizer = variant(params, base_cls, **kwargs)
        optimizer.closure_hint = (" timm's own train.py calls step() without one; run `python -m timm_ext.train` "
                                  "with the same flags instead.")
        return optimizer

    build.__name__ = build.__qualname__ = variant.__name__
    build.__doc__ = variant.__doc__
    return build


def register_all() -> None:
    """Register every variant under its name (idempotent). The factory drops nothing: which of
    momentum / eps / betas reach the base is decided by the base's own registry entry."""
    known = set(default_registry.list_optimizers())
    for name in sam_plugins.available():
        if name in known:
            continue
        variant = sam_plugins.get(name)
        default_registry.register(OptimInfo(
            name=name, opt_class=variant_factory(variant), description=f"sam_plugins: {variant.__doc__}",
            has_eps=True, has_momentum=True, has_betas=True))
