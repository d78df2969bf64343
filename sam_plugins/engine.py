"""The shared engine: one update of any sharpness-aware variant over any base optimizer.

An update is: the gradient at θ (pass 0), k ascent steps on the same batch, a combination of what the ascent
saw into one direction, an exact restore of θ, then the base optimizer's step with that direction as the
gradient. A variant declares its ``hyperparameters`` and overrides the hooks below (each documented where it
is defined; ``docs/writing-a-variant.md`` walks through a complete one). Hooks see the update through
``sam_plugins.context.Update``, raise ``SkipUpdate`` to abandon it and stage lasting changes with
``ctx.stage``, committed at the base step: a skipped or failed update leaves every piece of state as it was.
Per-group hyperparameters (ρ, ``adaptive``, η…) live in ``param_groups`` like ``lr``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from . import checkpoint
from .ascent import ascend
from .bases import BaseSpec, resolve_base
from .context import SkipUpdate, Update
from .distributed import Distributed
from .groups import GroupRules, spans_of
from .hyper import COMMON, Hyper, resolve
from .introspection import constructor_docstring, constructor_signature
from .passes import Passes
from .replay import NoReplay, RngReplay, Snapshot

Closure = Callable[[], Tensor]


class Namespace:
    """Validated hyperparameters as attributes (``opt.hp.rho``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())


class SharpnessAware(torch.optim.Optimizer):
    """SAM's update over a base optimizer; the base class of every variant (see the module's docstring)."""

    name: ClassVar[str] = "sam"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = COMMON

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._describe_constructor()

    @classmethod
    def _describe_constructor(cls) -> None:
        """The signature and the ``Args:`` docstring Python's tools show, from the declarations."""
        cls.__signature__ = constructor_signature(cls)  # type: ignore[attr-defined]
        summary = cls.__dict__.get("__doc__") or f"The sharpness-aware variant {cls.name!r}."
        cls.__doc__ = constructor_docstring(summary, cls)

    def __init__(self, params: Iterable[Any] | nn.Module, base: BaseSpec = "sgd", *,
                 model: nn.Module | None = None, grad_scaler: torch.amp.GradScaler | None = None,
                 distributed: Distributed | None = None, group_keys: Iterable[str] = (), **kwargs: Any) -> None:
        owner = type(self).__name__
        declared = {h.name for h in self.hyperparameters}
        values = resolve(self.hyperparameters, {k: v for k, v in kwargs.items() if k in declared}, owner)
        self.hp: Any = Namespace(values)  # attributes per variant: typed as Any
        base_cls = resolve_base(base)
        if isinstance(params, nn.Module):
            model = model if model is not None else params
            params = params.parameters()
        base_kwargs = {k: v for k, v in kwargs.items() if k not in declared}
        try:
            self.base = base_cls(params, **base_kwargs)
        except TypeError as err:
            raise TypeError(f"{owner}: building the base optimizer {getattr(base_cls, '__name__', base_cls)} with "
                            f"{sorted(base_kwargs)} failed ({err}); hyperparameters of {self.name!r} are "
                            f"{sorted(declared)}") from err
        self.group_rules = GroupRules(owner, self.hyperparameters, values, self.base.defaults, group_keys)
        for i, group in enumerate(self.base.param_groups):
            self.group_rules.check_keys(group, f"param_groups[{i}]")
        super().__init__(self.base.param_groups, {**self.base.defaults, **self.group_rules.defaults})
        self.param_groups = self.base.param_groups
        self._groups_shared = True
        self.group_rules.apply(self.param_groups)
        self.model = model
        self.grad_scaler = grad_scaler
        self.distributed = distributed
        self.counters = self.fresh_counters()
        self.scalars: dict[str, Any] = self.fresh_scalars()
        self.stats: dict[str, float] = {}
        self.last_skip: str | None = None
        self.closure_hint = ""
        self._snapshot = Snapshot()
        self._passes: Passes | None = None

    # ----------------------------------------------------------------- hooks for variants
    def initial_scalars(self) -> dict[str, Any]:
        """Hook: the variant's scalars kept across updates and saved in ``state_dict`` (α*, probe due…)."""
        return {}

    def initial_counters(self) -> dict[str, int]:
        """Hook: the variant's counters beside ``updates`` and ``skipped`` (XSAM's probes and edge hits)."""
        return {}

    def prepare(self, ctx: Update) -> None:
        """Hook: after pass 0 (``ctx.grads()`` is g_0), before the first ascent step. May run extra passes."""

    def ascent_direction(self, ctx: Update, i: int) -> list[Tensor] | None:
        """Hook: the vector ascent step i moves along, as a fresh list the engine may scale in place; None for
        the gradient of pass i itself. The engine normalises it (ASAM's T² scaling where ``adaptive``)."""
        return None

    def observe(self, ctx: Update, i: int) -> None:
        """Hook: after pass i (``ctx.grads()`` is g_i, ``ctx.params`` already moved on to ϑ_{i+1} when i < k)."""

    def combine(self, ctx: Update) -> None:
        """Hook: after pass k; leave the update direction in ``.grad`` (the default keeps g_k: SAM)."""

    def after_step(self, ctx: Update) -> None:
        """Hook: after the base optimizer stepped (the staged state is committed by then)."""

    def epoch_started(self) -> None:
        """Hook: ``begin_epoch`` was called for a new epoch."""

    # ----------------------------------------------------------------- public surface
    def fresh_scalars(self) -> dict[str, Any]:
        return {"epoch": None, **self.initial_scalars()}

    def fresh_counters(self) -> dict[str, int]:
        return {"updates": 0, "skipped": 0, **self.initial_counters()}

    def begin_epoch(self, epoch: int | None = None) -> None:
        """Call at the start of each epoch. Given the epoch's number, a repeated call for the epoch under
        way (a training loop resuming mid-epoch from a checkpoint calls it again) changes nothing, so a
        resumed run makes exactly the probes of an uninterrupted one."""
        if epoch is not None:
            if self.scalars["epoch"] == epoch:
                return
            self.scalars["epoch"] = epoch
        self.epoch_started()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (which shares ``param_groups``); per-group keys default to the
        constructor's values, and unknown keys or invalid values are refused before anything is added."""
        if not getattr(self, "_groups_shared", False):
            super().add_param_group(param_group)
            return
        index = len(self.param_groups)
        self.group_rules.check_keys(param_group, f"param_groups[{index}]")
        self.base.add_param_group({**param_group, **self.group_rules.values(param_group, index)})

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()`` for closures: scales for AMP and is skipped during forward-only probes.

        A closure that uses this helper lets XSAM's α probes run under ``torch.no_grad()``.
        """
        if self._passes is not None:
            if self._passes.probing:
                return
            self._passes.helper_backward = True
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()

    @property
    def probing(self) -> bool:
        """True while the closure runs for a forward-only probe (its gradients are not used)."""
        return self._passes is not None and self._passes.probing

    @property
    def sync_gradients(self) -> bool:
        """False when the closure should skip DDP's gradient all-reduce (per-replica ascent)."""
        return self.distributed is None or not self.distributed.local_ascent

    def no_sync(self, model: Any) -> contextlib.AbstractContextManager:
        """``model.no_sync()`` (a DDP model) when gradients must stay local in this pass, else a null context."""
        return contextlib.nullcontext() if self.sync_gradients else model.no_sync()

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict plus a ``"sam"`` entry with the variant's own state; hooks registered
        with ``register_state_dict_pre_hook`` / ``_post_hook`` run as on any torch optimizer."""
        return checkpoint.save(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what ``state_dict`` wrote (another variant or base is refused); ``register_load_state_dict_pre_hook``
        / ``_post_hook`` hooks run as on any torch optimizer."""
        checkpoint.load(self, state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    # ----------------------------------------------------------------- the update
    @torch.no_grad()
    def step(self, closure: Closure | None = None, *, loss: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """One sharpness-aware update. ``closure`` computes the loss on the batch and backpropagates.

        With ``loss`` given, the caller has already run the first pass: ``.grad`` holds the gradient
        at θ and ``loss`` its loss, and the closure runs only the later passes (integrations whose
        framework computes the first pass itself, e.g. fairseq's trainer). Such a closure replays any
        RNG state itself and skips backward while ``opt.probing`` is True (probes run under no_grad).
        """
        self.group_rules.apply(self.param_groups)
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a closure: a sharpness-aware update evaluates the batch "
                "several times. Write `def closure(): loss = criterion(model(x), y); opt.backward(loss); "
                f"return loss` and call `opt.step(closure)`.{self.closure_hint}")
        if loss is None:
            devices = {p.device for g in self.param_groups for p in g["params"]}
            rng: RngReplay | NoReplay = RngReplay(devices) if self.hp.replay_rng else NoReplay()
        else:
            rng = NoReplay()
        scale = float(self.grad_scaler.get_scale()) if self.grad_scaler is not None else 1.0
        passes = Passes(type(self).__name__, closure, rng, scale, self.distributed, helper_backward=loss is not None)
        self._passes = passes
        try:
            return self._update(passes, loss)
        finally:
            self._passes = None

    def _update(self, passes: Passes, loss0: Tensor | None) -> Tensor:
        if loss0 is None:
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad = None
            loss0 = passes.run()
        ctx = Update(self, passes)
        ctx.params, ctx.groups, ctx.spans = spans_of(self.param_groups, list(self.group_rules.defaults))
        if not ctx.params:
            return loss0.detach()
        if any(p.grad is not None and p.grad.is_sparse for p in ctx.params):
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        try:
            passes.unscale(ctx)
            self._measure(ctx, loss0)
            ctx.origin = self._snapshot.save(ctx.params, self.model)
            try:
                self._ascend_and_combine(ctx)
            finally:
                self._snapshot.restore(ctx.params, self.model)
                passes.rng.finish()
        except SkipUpdate as skip:
            self._skip(ctx, str(skip))
            return loss0.detach()
        self._finish(ctx)
        return loss0.detach()

    def _ascend_and_combine(self, ctx: Update) -> None:
        self.prepare(ctx)
        k = self.hp.steps
        for i in range(k + 1):
            if i > 0:
                self._measure(ctx, ctx.gradient_pass())
            if i < k:
                ascend(ctx, self.ascent_direction(ctx, i), k, ctx.norms[i])
            self.observe(ctx, i)
        self.combine(ctx)

    def _measure(self, ctx: Update, loss: Tensor) -> None:
        """Record the loss and gradient norm of the latest ascent pass; SkipUpdate if either is not finite."""
        i = len(ctx.losses)
        loss_value, norm, finite = ctx._passes.to_host_checked(loss, ctx.grads())
        ctx.losses.append(loss_value)
        ctx.norms.append(norm)
        if not finite:
            raise SkipUpdate("pass 0 (the gradient at θ)" if i == 0 else
                             f"pass {i} of {self.hp.steps} (the gradient at ϑ_{i})")

    def _skip(self, ctx: Update, failed: str) -> None:
        """A non-finite pass: no base step, no state change; an AMP scaler is told so it backs off.
        ``last_skip`` says which pass it was, for training loops to report."""
        self.counters["skipped"] += 1
        self.stats = {"skipped": 1.0}
        where = " on at least one replica" if self.distributed is not None else ""
        self.last_skip = f"{failed}{where}"
        if self.grad_scaler is not None:
            ctx.params[0].grad = torch.full_like(ctx.params[0], float("nan"))
            self.grad_scaler.unscale_(self.base)
        for p in ctx.params:
            p.grad = None

    def _finish(self, ctx: Update) -> None:
        """Reduce across replicas, clip, commit staged state, base step (through the GradScaler if any)."""
        grads = ctx.grads()
        ctx.local_ascent_mean_(grads)
        if self.grad_scaler is not None:
            torch._foreach_mul_(grads, ctx._passes.loss_scale)
            self.grad_scaler.unscale_(self.base)
        if self.hp.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(ctx.params, self.hp.max_grad_norm, foreach=True)
        for key, tensors in ctx._staged.state.items():
            for p, t in zip(ctx.params, tensors):
                self.state[p][key] = t
        self.scalars.update(ctx._staged.scalars)
        for key, count in ctx._staged.counts.items():
            self.counters[key] += count
        self.counters["updates"] += 1
        k = self.hp.steps
        ctx.stats.update(loss=ctx.losses[0], perturbed_loss=ctx.losses[k], grad_norm=ctx.norms[0],
                         sharpness=ctx.losses[k] - ctx.losses[0], rho=ctx.spans[0].hp["rho"], skipped=0.0)
        self.stats = ctx.stats
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.base)
        else:
            self.base.step()
        self.after_step(ctx)


SharpnessAware._describe_constructor()
