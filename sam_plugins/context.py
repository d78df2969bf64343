"""What a variant's hooks see of one update: the ``Update`` context, its ``Span``s and ``SkipUpdate``.

Gradients are in true units throughout (the engine removes a GradScaler's loss scale after every pass), so a
variant never sees loss scaling. Anything a variant wants to keep beyond the update is staged with
``Update.stage`` and written into the optimizer only when the base optimizer steps: a skipped update leaves
every piece of state as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .tensors import Tensors

if TYPE_CHECKING:
    from .engine import SharpnessAware
    from .passes import Passes


class SkipUpdate(Exception):
    """Raised by a hook to abandon the update: θ is restored, no base step runs, no state changes.

    ``what`` names the pass that failed (it becomes ``opt.last_skip``, e.g. "Hessian power iteration 2 of 5
    had a non-finite loss or gradient").
    """

    def __init__(self, what: str, reason: str = "had a non-finite loss or gradient") -> None:
        super().__init__(f"{what} {reason}")


@dataclass
class Span:
    """Consecutive entries of ``Update.params`` whose param groups hold the same per-group values ``hp``."""

    start: int
    stop: int
    hp: dict[str, Any]

    def of(self, tensors: list[Tensor]) -> list[Tensor]:
        """This span's part of a list aligned with ``Update.params``."""
        return tensors[self.start:self.stop]


@dataclass
class Staged:
    """State changes of one update, committed together at the base step."""

    state: dict[str, Tensors] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class Update:
    """One call of ``step`` as a variant sees it; dropped when the call returns.

    - ``params``: the parameters that have a gradient, in param-group order; they hold the current point
      (θ, then ϑ_1 … ϑ_k). A hook may move them: the engine restores θ bit-identically before the base step.
    - ``origin``: θ itself (read only).
    - ``spans``: runs of ``params`` with equal per-group values (``span.hp["rho"]``…); ``groups``: each param
      group with its own span (for keys the base reads, such as ``lr``).
    - ``losses`` / ``norms``: loss and global gradient norm of pass 0 (at θ) … pass k (at ϑ_k).
    - ``stats``: extra values reported in ``opt.stats`` after the update; ``kept``: scratch for this update.
    """

    def __init__(self, owner: SharpnessAware, passes: Passes) -> None:
        self.params: list[Tensor] = []
        self.origin: list[Tensor] = []
        self.spans: list[Span] = []
        self.groups: list[tuple[dict[str, Any], Span]] = []
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.stats: dict[str, float] = {}
        self.kept: dict[str, Any] = {}
        self._staged = Staged()
        self._passes = passes
        self._owner = owner

    def grads(self) -> list[Tensor]:
        """The current ``.grad`` of every entry of ``params`` (zeros where a pass left none)."""
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        return grads

    def keep_grads(self, key: str) -> list[Tensor]:
        """Keep this pass's gradient tensors under ``kept[key]`` (no copy: the next pass allocates new ones)."""
        self.kept[key] = self.grads()
        return self.kept[key]

    def saved(self, key: str) -> list[Tensor] | None:
        """The optimizer's per-parameter state ``key`` for ``params``, or None if any parameter lacks it."""
        values = [self._owner.state[p].get(key) for p in self.params]
        return None if any(v is None for v in values) else values

    def stage(self, *, state: dict[str, Tensors] | None = None, scalars: dict[str, Any] | None = None,
              counts: dict[str, int] | None = None) -> None:
        """Changes to commit when the base optimizer steps: per-parameter ``state`` (lists aligned with
        ``params``), ``scalars`` (replaced in ``opt.scalars``) and ``counts`` (added to ``opt.counters``)."""
        self._staged.state.update(state or {})
        self._staged.scalars.update(scalars or {})
        for key, count in (counts or {}).items():
            self._staged.counts[key] = self._staged.counts.get(key, 0) + count

    def move_to_origin(self) -> None:
        """Put θ back into ``params``."""
        torch._foreach_copy_(self.params, self.origin)

    def gradient_pass(self) -> Tensor:
        """Run the closure at the current ``params`` for a fresh gradient (RNG replayed); returns its loss."""
        return self._passes.gradient(self)

    def forward_pass(self) -> Tensor:
        """The loss at the current ``params``, forward only; the stored gradients are left as they are."""
        return self._passes.forward(self)

    def checked_norm(self, loss: Tensor, tensors: Tensors, what: str) -> float:
        """The global norm of ``tensors``; raises ``SkipUpdate(what)`` if it or ``loss`` is not finite (on any
        replica, when distributed)."""
        _, norm, finite = self._passes.to_host_checked(loss, tensors)
        if not finite:
            raise SkipUpdate(what)
        return norm

    def replica_mean(self, values: Tensor) -> Tensor:
        """``values`` averaged over the data-parallel replicas (unchanged when not distributed)."""
        distributed = self._owner.distributed
        return values if distributed is None else distributed.mean(values)

    def local_ascent_mean_(self, tensors: list[Tensor]) -> None:
        """Average ``tensors`` over replicas in place when each replica ascends on its own (per-replica
        ascent), as the engine does with the final direction; nothing otherwise."""
        distributed = self._owner.distributed
        if distributed is not None and distributed.local_ascent:
            distributed.mean_(tensors)
