"""A variant's state dict: the base optimizer's own, plus a ``"sam"`` entry with the variant's state.

The entry holds the variant's name, the base optimizer's class, the counters, the scalars (α*, the epoch under
way…) and the per-parameter state (EMA, eigenvector) keyed by the parameter's position, as torch keys the
base's state. Only tensors, numbers and strings, so ``torch.load(..., weights_only=True)`` reads it. Hooks
registered with torch's ``register_state_dict_*`` / ``register_load_state_dict_*`` methods run where torch runs
them on its own optimizers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from .engine import SharpnessAware


def base_name(opt: SharpnessAware) -> str:
    cls = type(opt.base)
    return f"{cls.__module__}.{cls.__qualname__}"


def ordered_params(opt: SharpnessAware) -> list[Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def pack(opt: SharpnessAware) -> dict[str, Any]:
    """The base optimizer's state dict with the variant's entry added."""
    state = opt.base.state_dict()
    index = {id(p): i for i, p in enumerate(ordered_params(opt))}
    state["sam"] = {
        "variant": opt.name,
        "base": base_name(opt),
        "counters": dict(opt.counters),
        "scalars": dict(opt.scalars),
        "state": {index[id(p)]: dict(s) for p, s in opt.state.items() if s and id(p) in index},
    }
    return state


def unpack(opt: SharpnessAware, state_dict: dict[str, Any]) -> None:
    """Load what ``pack`` wrote; another variant, another base or invalid group values are refused first."""
    owner = type(opt).__name__
    state_dict = dict(state_dict)
    sam = state_dict.pop("sam", None)
    if sam is None or sam.get("variant") != opt.name:
        found = None if sam is None else sam.get("variant")
        raise ValueError(f"{owner}.load_state_dict: expected a state dict of variant {opt.name!r}, got {found!r}")
    if sam.get("base", base_name(opt)) != base_name(opt):
        raise ValueError(f"{owner}.load_state_dict: the state dict was saved with base optimizer {sam['base']}, "
                         f"this optimizer's base is {base_name(opt)}; the base's state (momentum buffers, Adam "
                         "moments) does not carry over to another base")
    opt.group_rules.checked(state_dict["param_groups"])
    opt.base.load_state_dict(state_dict)
    opt.param_groups = opt.base.param_groups
    opt.group_rules.apply(opt.param_groups)
    params = ordered_params(opt)
    opt.state = defaultdict(dict)
    for i, entries in sam["state"].items():
        p = params[int(i)]
        opt.state[p] = {k: v.to(device=p.device, dtype=p.dtype) if isinstance(v, Tensor) else v
                        for k, v in entries.items()}
    opt.counters = {**opt.fresh_counters(), **sam["counters"]}
    opt.scalars = {**opt.fresh_scalars(), **sam["scalars"]}


def save(opt: SharpnessAware) -> dict[str, Any]:
    """``pack`` between torch's state-dict pre-hooks and post-hooks (a post-hook may return a new dict)."""
    for pre_hook in opt._optimizer_state_dict_pre_hooks.values():
        pre_hook(opt)
    state = pack(opt)
    for post_hook in opt._optimizer_state_dict_post_hooks.values():
        state = post_hook(opt, state) or state
    return state


def load(opt: SharpnessAware, state_dict: dict[str, Any]) -> None:
    """``unpack`` between torch's load pre-hooks (which may return a new dict) and post-hooks."""
    state_dict = dict(state_dict)
    for pre_hook in opt._optimizer_load_state_dict_pre_hooks.values():
        state_dict = pre_hook(opt, state_dict) or state_dict
    unpack(opt, state_dict)
    for post_hook in opt._optimizer_load_state_dict_post_hooks.values():
        post_hook(opt)
