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

# Param-group keys timm puts in the groups and reads itself: layer decay (lr_scale, param_names), the fallback
# split of Muon-style optimizers (use_fallback) and the Lookahead wrapper (lookahead_*).
TIMM_GROUP_KEYS = ("lr_scale", "param_names", "use_fallback", "lookahead_alpha", "lookahead_k", "lookahead_step")


def timm_base(name: str) -> tuple[Callable[..., torch.optim.Optimizer], OptimInfo]:
    """A base optimizer from timm's registry, with its registered defaults bound."""
    if name.lower() in sam_plugins.available():
        raise ValueError(f"base={name!r} is itself a sharpness-aware variant; choose a plain optimizer "
                         f"such as 'sgd', 'momentum' or 'adamw'")
    try:
        info = default_registry.get_optimizer_info(name)
    except ValueError:
        plain = sorted(str(n) for n in default_registry.list_optimizers()
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
        optimizer = variant(params, base_cls, group_keys=TIMM_GROUP_KEYS, **kwargs)
        optimizer.closure_hint = (" timm's own train.py calls step() without one; run `python -m timm_ext.train` "
                                  "with the same flags instead.")
        return optimizer

    build.__name__ = build.__qualname__ = variant.__name__
    build.__doc__ = variant.__doc__
    return build


def register_variant(variant: type[SharpnessAware]) -> None:
    """Register one variant under its name (idempotent). The factory drops nothing: which of momentum / eps /
    betas reach the base is decided by the base's own registry entry."""
    if variant.name in default_registry.list_optimizers():
        return
    summary = (variant.__doc__ or "").strip().splitlines()[0]
    default_registry.register(OptimInfo(
        # timm calls opt_class(params, **kwargs), so a factory serves where its stub asks for a class
        name=variant.name, opt_class=variant_factory(variant),  # type: ignore[arg-type]
        description=f"sam_plugins: {summary}",
        has_eps=True, has_momentum=True, has_betas=True))


def register_all() -> None:
    """Every variant registered in sam_plugins, now and later, in timm's registry."""
    sam_plugins.on_register(register_variant)
