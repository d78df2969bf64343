"""Variants by name: ``register`` (a class decorator), ``available``, ``get``, ``create``, and ``on_register`` for
integrations that mirror the registry into a framework's own (timm's optimizer registry, fairseq's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .engine import SharpnessAware

_VARIANTS: dict[str, type[SharpnessAware]] = {}
_LISTENERS: list[Callable[[type[SharpnessAware]], None]] = []


def register(cls: type[SharpnessAware]) -> type[SharpnessAware]:
    """Add a variant under ``cls.name``; names have no underscores (timm's registry splits on them)."""
    if "_" in cls.name or cls.name != cls.name.lower():
        raise ValueError(f"variant name {cls.name!r} must be lower case without underscores")
    if cls.name in _VARIANTS:
        raise ValueError(f"variant {cls.name!r} is already registered by {_VARIANTS[cls.name].__qualname__}")
    _VARIANTS[cls.name] = cls
    for listener in _LISTENERS:
        listener(cls)
    return cls


def on_register(listener: Callable[[type[SharpnessAware]], None]) -> None:
    """Call ``listener(cls)`` for every variant registered so far and for each one registered later, so a
    variant defined outside the package after ``import timm_ext`` or ``fairseq_ext`` still reaches their registries."""
    if listener in _LISTENERS:
        return
    _LISTENERS.append(listener)
    for name in available():
        listener(_VARIANTS[name])


def available() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(_VARIANTS)


def get(name: str) -> type[SharpnessAware]:
    """The class of variant ``name``; ValueError listing the names if unknown."""
    try:
        return _VARIANTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown sharpness-aware variant {name!r}; choose one of {available()}") from None


def create(name: str, params: Iterable[Any] | nn.Module, base: Any = "sgd", **kwargs: Any) -> SharpnessAware:
    """``get(name)(params, base, **kwargs)``: hyperparameters of the variant plus the base's keywords."""
    return get(name)(params, base, **kwargs)
