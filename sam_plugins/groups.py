"""Param groups: which keys a group may hold, its validated per-group values, and the spans of one update.

A group may hold the keys the base optimizer reads, the variant's per-group hyperparameters, the keys torch's
schedulers write (``initial_lr``) and the keys a framework declares it puts there (``group_keys``: timm's
``lr_scale``…). Anything else is most likely a misspelling and is refused before anything changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from .context import Span
from .hyper import Hyper

TORCH_GROUP_KEYS = ("initial_lr",)


class GroupRules:
    """The param-group keys and values a variant accepts; ``owner`` names it in error messages."""

    def __init__(self, owner: str, hyperparameters: tuple[Hyper, ...], constructor_values: dict[str, Any],
                 base_keys: Iterable[str], group_keys: Iterable[str]) -> None:
        self.owner = owner
        self.per_group = tuple(h for h in hyperparameters if h.per_group)
        self.global_names = sorted({h.name for h in hyperparameters} - {h.name for h in self.per_group})
        self.defaults = {h.name: constructor_values[h.name] for h in self.per_group}
        self.known = {"params", *base_keys, *self.defaults, *TORCH_GROUP_KEYS, *group_keys}

    def check_keys(self, group: dict[str, Any], label: str) -> None:
        """Refuse keys that no part of the optimizer reads (a misspelled ``rhoo``) and global hyperparameters."""
        misplaced = sorted(set(group) & set(self.global_names))
        if misplaced:
            raise ValueError(f"{self.owner}: {label} sets {misplaced}, which are global (one value for all groups): "
                             f"pass them to the constructor; per-group keys are {sorted(self.defaults)}")
        unknown = sorted(set(group) - self.known)
        if unknown:
            raise ValueError(f"{self.owner}: {label} has unknown key(s) {unknown}; known keys: "
                             f"{sorted(self.known - {'params'})} (a framework's own keys are accepted when passed "
                             "as group_keys=...)")

    def values(self, group: dict[str, Any], index: int) -> dict[str, Any]:
        """The group's per-group values, validated (a missing key takes the constructor's value)."""
        label = f"param_groups[{index}]"
        return {h.name: h.check(group.get(h.name, self.defaults[h.name]), self.owner, f"{label}[{h.name!r}]")
                for h in self.per_group}

    def checked(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every group's values, all validated before the caller changes anything."""
        return [self.values(group, i) for i, group in enumerate(groups)]

    def apply(self, groups: list[dict[str, Any]]) -> None:
        """Validate every group's values (schedulers may have written them) and fill in missing ones."""
        for group, values in zip(groups, self.checked(groups)):
            group.update(values)


def spans_of(groups: list[dict[str, Any]], names: list[str]
             ) -> tuple[list[Tensor], list[tuple[dict[str, Any], Span]], list[Span]]:
    """The parameters with a gradient, each group's span of them, and the spans of equal per-group values
    ``names`` (consecutive groups that differ only in keys the base reads share one span)."""
    params: list[Tensor] = []
    group_spans: list[tuple[dict[str, Any], Span]] = []
    spans: list[Span] = []
    for group in groups:
        members = [p for p in group["params"] if p.grad is not None]
        if not members:
            continue
        values = {name: group[name] for name in names}
        start = len(params)
        params += members
        group_spans.append((group, Span(start, len(params), values)))
        if spans and spans[-1].hp == values:
            spans[-1].stop = len(params)
        else:
            spans.append(Span(start, len(params), values))
    return params, group_spans, spans
