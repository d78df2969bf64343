"""One declaration per hyperparameter: name, type, default, allowed range and help.

Every surface (the Python constructors and their docstrings, fairseq's dataclass configs, timm's flags)
is generated from these declarations, so a default or a range is written down exactly once. ``COMMON``
holds the hyperparameters every variant has; ``with_defaults`` gives a variant its own defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Hyper:
    """A hyperparameter: ``low``/``high`` bound numbers, ``choices`` bound strings.

    ``per_group`` marks a value that is meaningful per parameter: it lives in ``param_groups`` like
    ``lr`` (the constructor's value is the default a group may override, and schedulers may write it).
    """

    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    per_group: bool = False

    def with_default(self, default: Any, help: str | None = None) -> Hyper:
        return replace(self, default=default, help=help or self.help)

    def allowed(self) -> str:
        """Human-readable allowed range, used in error messages and help texts."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "True or False"
        if self.low is None and self.high is None:
            return f"any finite {self.kind.__name__}"
        article = "an" if self.kind is int else "a"
        lo = "-inf" if self.low is None else repr(self.low)
        hi = "inf" if self.high is None else repr(self.high)
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        return f"{article} {self.kind.__name__} in {left}{lo}, {hi}{right}"

    def check(self, value: Any, owner: str, label: str | None = None) -> Any:
        """Return ``value`` converted to ``kind``; raise ValueError naming it (as ``label``, default the
        name) and the allowed range."""
        bad = ValueError(f"{owner}: {label or self.name}={value!r} is invalid; allowed: {self.allowed()}")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices is not None and value not in self.choices):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind is int and value != int(value):
            raise bad
        value = self.kind(value)
        if not math.isfinite(value):
            raise bad
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise bad
        return value


def resolve(declared: tuple[Hyper, ...], given: dict[str, Any], owner: str) -> dict[str, Any]:
    """Validate ``given`` against ``declared`` and fill in defaults; ``given`` must be declared."""
    names = {h.name for h in declared}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"{owner}: unknown hyperparameter(s) {unknown}; declared: {sorted(names)}")
    return {h.name: h.check(given.get(h.name, h.default), owner) for h in declared}


def with_defaults(declared: tuple[Hyper, ...], **defaults: Any) -> tuple[Hyper, ...]:
    """``declared`` with some defaults replaced, e.g. ``with_defaults(COMMON, rho=0.5, adaptive=True)``."""
    names = {h.name for h in declared}
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise TypeError(f"with_defaults: unknown hyperparameter(s) {unknown}; declared: {sorted(names)}")
    return tuple(h.with_default(h.check(defaults[h.name], "with_defaults")) if h.name in defaults else h
                 for h in declared)


RHO = Hyper("rho", float, 0.05, "total perturbation radius; each of the k ascent steps moves rho/k",
            low=0.0, low_open=True, per_group=True)
STEPS = Hyper("steps", int, 1, "number of ascent steps k (k > 1: multi-step)", low=1)
ADAPTIVE = Hyper("adaptive", bool, False, "ASAM-style adaptive perturbation scaled by |w| + eta", per_group=True)
ETA = Hyper("eta", float, 0.01, "ASAM's offset eta in T_w = |w| + eta", low=0.0, per_group=True)
REPLAY_RNG = Hyper("replay_rng", bool, True,
                   "replay the RNG state in every pass of an update (same dropout masks)")
MAX_GRAD_NORM = Hyper("max_grad_norm", float, 0.0,
                      "clip the final direction to this global norm before the base step (0: off)", low=0.0)

COMMON: tuple[Hyper, ...] = (RHO, STEPS, ADAPTIVE, ETA, REPLAY_RNG, MAX_GRAD_NORM)
