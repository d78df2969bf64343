"""The shared engine: one update of any sharpness-aware variant over any base optimizer.

An update is: gradient at θ (pass 0), k ascent steps on the same batch, a combination of what the
ascent saw into one direction, an exact restore of θ, then the base optimizer's step with that
direction as the gradient. A variant overrides a few hooks:

- ``_prepare``: work between pass 0 and the first ascent (F-SAM's EMA, evsam's eigenvector);
- ``_ascent_direction``: the vector to ascend along (default: the gradient);
- ``_observe``: remember what a pass saw (called after every pass, after its ascent);
- ``_combine``: write the final direction into ``.grad`` (default: keep g_k, i.e. SAM);
- ``_after_base_step``: work after the base optimizer stepped (decoupled WSAM).

Hyperparameters declared ``per_group`` (ρ, ``adaptive``, η and each variant's per-parameter knobs) live in
``param_groups`` like ``lr``: the constructor's values are defaults, a group may override them and anything
that writes ``group["rho"]`` schedules ρ. Norms and the XSAM plane stay global over all groups.

Variant state changes are staged in the update's context and committed only when the base step
runs, so a skipped or failed update leaves parameters and all optimizer state bit-identical.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .bases import BaseSpec, resolve_base
from .distributed import Distributed
from .hyper import Hyper, resolve
from .tensors import global_norm, to_host

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

# Param-group keys that neither the variant nor the base optimizer reads but that schedulers and model
# helpers put there: torch's schedulers (initial_lr), timm's layer decay (lr_scale, param_names) and
# fallback split (use_fallback), named groups, timm's Lookahead wrapper (lookahead_*).
FRAMEWORK_GROUP_KEYS = ("initial_lr", "lr_scale", "param_names", "use_fallback", "name",
                        "lookahead_alpha", "lookahead_k", "lookahead_step")

Closure = Callable[[], Tensor]


@dataclass
class Span:
    """Consecutive entries of ``Update.params`` whose param groups hold the same per-group values."""

    start: int
    stop: int
    hp: dict[str, Any]

    def of(self, tensors: list[Tensor]) -> list[Tensor]:
        """This span's part of a list aligned with ``Update.params``."""
        return tensors[self.start:self.stop]


@dataclass
class Update:
    """Everything one call of ``step`` knows; dropped when the call returns."""

    closure: Closure
    rng: Any = None
    params: list[Tensor] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    groups: list[tuple[dict[str, Any], Span]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    loss_scale: float = 1.0
    stats: dict[str, float] = field(default_factory=dict)
    pending_scalars: dict[str, Any] = field(default_factory=dict)
    pending_tensors: dict[str, list[Tensor]] = field(default_factory=dict)
    pending_counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    kept: dict[str, list[Tensor]] = field(default_factory=dict)

    def grads(self) -> list[Tensor]:
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        return grads


class _RngReplay:
    """Captures the RNG state before pass 0 and replays it before every later pass."""

    def __init__(self, devices: set[torch.device]) -> None:
        self.cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
        self.before = self._capture()
        self.after: tuple | None = None

    def _capture(self) -> tuple:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(i) for i in self.cuda]

    def _set(self, state: tuple) -> None:
        torch.set_rng_state(state[0])
        for i, s in zip(self.cuda, state[1]):
            torch.cuda.set_rng_state(s, i)

    def replay(self) -> None:
        if self.after is None:
            self.after = self._capture()
        self._set(self.before)

    def finish(self) -> None:
        if self.after is not None:
            self._set(self.after)


class _NoReplay:
    def replay(self) -> None:
        pass

    def finish(self) -> None:
        pass


def running_stat_buffers(model: nn.Module) -> list[Tensor]:
    """Running statistics of every normalization layer that tracks them (BatchNorm and friends)."""
    buffers = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            buffers += [b for b in (module.running_mean, module.running_var, module.num_batches_tracked)
                        if b is not None]
    return buffers


class SharpnessAware(torch.optim.Optimizer):
    """Base class of every variant: SAM's update, with hooks for what the variants change.

    ``params`` are parameters or param groups (or an ``nn.Module``, which also enables the
    BatchNorm guard); ``base`` names the base optimizer (see ``sam_plugins.bases``) or is an
    optimizer class. Keywords that are not hyperparameters of the variant go to the base optimizer.
    Pass ``model`` so running statistics of normalization layers are updated once per update, and
    ``grad_scaler`` for fp16 autocast.
    """

    name: ClassVar[str] = "sam"
    hyperparameters: ClassVar[tuple[Hyper, ...]] = COMMON

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _signature(cls)

    def __init__(self, params: Iterable[Any] | nn.Module, base: BaseSpec = "sgd", *,
                 model: nn.Module | None = None, grad_scaler: torch.amp.GradScaler | None = None,
                 distributed: Distributed | None = None, **kwargs: Any) -> None:
        declared = {h.name for h in self.hyperparameters}
        self.hp = _Namespace(resolve(self.hyperparameters, {k: v for k, v in kwargs.items() if k in declared},
                                     type(self).__name__))
        self._validate()
        base_cls = resolve_base(base)
        if isinstance(params, nn.Module):
            model = model if model is not None else params
            params = params.parameters()
        base_kwargs = {k: v for k, v in kwargs.items() if k not in declared}
        try:
            self.base = base_cls(params, **base_kwargs)
        except TypeError as err:
            raise TypeError(f"{type(self).__name__}: building the base optimizer "
                            f"{getattr(base_cls, '__name__', base_cls)} with {sorted(base_kwargs)} failed ({err}); "
                            f"hyperparameters of {self.name!r} are {sorted(declared)}") from err
        for i, group in enumerate(self.base.param_groups):
            self._check_group_keys(group, f"param_groups[{i}]")
        per_group = {h.name: getattr(self.hp, h.name) for h in self._group_hyperparameters()}
        super().__init__(self.base.param_groups, {**self.base.defaults, **per_group})
        self.param_groups = self.base.param_groups
        self._groups_shared = True
        self._check_groups()
        self.model = model
        self.grad_scaler = grad_scaler
        self.distributed = distributed
        self.counters = self._fresh_counters()
        self.scalars: dict[str, Any] = self._fresh_scalars()
        self.stats: dict[str, float] = {}
        self.last_skip: str | None = None
        self._backup: list[Tensor] = []
        self._bn_saved: list[Tensor] = []
        self._probing = False
        self._probes_without_grad = False
        self.closure_hint = ""

    # ----------------------------------------------------------------- hooks for variants
    def _validate(self) -> None:
        """Cross-field checks of ``self.hp`` (each field is already in range)."""

    def _initial_scalars(self) -> dict[str, Any]:
        """Variant scalars kept across updates and saved in ``state_dict`` (α*, pending probes…)."""
        return {}

    def _fresh_scalars(self) -> dict[str, Any]:
        return {"epoch": None, **self._initial_scalars()}

    def _initial_counters(self) -> dict[str, int]:
        """Variant counters beside ``updates`` and ``skipped`` (XSAM's probes and edge hits)."""
        return {}

    def _fresh_counters(self) -> dict[str, int]:
        return {"updates": 0, "skipped": 0, **self._initial_counters()}

    def _prepare(self, ctx: Update) -> bool:
        return True

    def _ascent_direction(self, ctx: Update, i: int) -> list[Tensor] | None:
        """The vector to ascend along at step i (a fresh list the engine may scale in place), or None
        for the gradient itself."""
        return None

    def _observe(self, ctx: Update, i: int) -> None:
        pass

    def _combine(self, ctx: Update) -> bool:
        return True

    def _after_base_step(self, ctx: Update) -> None:
        pass

    def _epoch_started(self) -> None:
        """A new epoch begins (XSAM probes on its first update)."""

    def begin_epoch(self, epoch: int | None = None) -> None:
        """Call at the start of each epoch. Given the epoch's number, a repeated call for the epoch under
        way (a training loop resuming mid-epoch from a checkpoint calls it again) changes nothing, so a
        resumed run makes exactly the probes of an uninterrupted one."""
        if epoch is not None:
            if self.scalars["epoch"] == epoch:
                return
            self.scalars["epoch"] = epoch
        self._epoch_started()

    # ----------------------------------------------------------------- param groups
    def _group_hyperparameters(self) -> tuple[Hyper, ...]:
        return tuple(h for h in self.hyperparameters if h.per_group)

    def _check_group_keys(self, group: dict[str, Any], label: str) -> None:
        """Refuse keys that no part of the optimizer reads (a misspelled ``rhoo``) and global ones."""
        owner = type(self).__name__
        per_group = {h.name for h in self._group_hyperparameters()}
        global_names = sorted({h.name for h in self.hyperparameters} - per_group)
        misplaced = sorted(set(group) & set(global_names))
        if misplaced:
            raise ValueError(f"{owner}: {label} sets {misplaced}, which are global (one value for all groups): "
                             f"pass them to the constructor; per-group keys are {sorted(per_group)}")
        known = {"params", *self.base.defaults, *per_group, *FRAMEWORK_GROUP_KEYS}
        unknown = sorted(set(group) - known)
        if unknown:
            raise ValueError(f"{owner}: {label} has unknown key(s) {unknown}; known keys: {sorted(known - {'params'})}")

    def _group_values(self, group: dict[str, Any], index: int) -> dict[str, Any]:
        """The group's per-group values, validated (a missing key takes the constructor's value)."""
        owner, label = type(self).__name__, f"param_groups[{index}]"
        return {h.name: h.check(group.get(h.name, getattr(self.hp, h.name)), owner, f"{label}[{h.name!r}]")
                for h in self._group_hyperparameters()}

    def _checked_group_values(self, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._group_values(group, i) for i, group in enumerate(groups)]

    def _check_groups(self) -> None:
        """Validate the per-group values (schedulers may have written them) before anything changes."""
        for group, values in zip(self.param_groups, self._checked_group_values(self.param_groups)):
            group.update(values)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (which shares ``param_groups``); per-group keys default to the
        constructor's values, and unknown keys or invalid values are refused before anything is added."""
        if not getattr(self, "_groups_shared", False):
            super().add_param_group(param_group)
            return
        index = len(self.param_groups)
        self._check_group_keys(param_group, f"param_groups[{index}]")
        self.base.add_param_group({**param_group, **self._group_values(param_group, index)})

    # ----------------------------------------------------------------- closure helpers
    def backward(self, loss: Tensor) -> None:
        """``loss.backward()`` for closures: scales for AMP and is skipped during forward-only probes.

        A closure that uses this helper lets XSAM's α probes run under ``torch.no_grad()``.
        """
        if self._probing:
            return
        self._probes_without_grad = True
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()

    @property
    def probing(self) -> bool:
        """True while the closure runs for a forward-only probe (its gradients are not used)."""
        return self._probing

    @property
    def sync_gradients(self) -> bool:
        """False when the closure should skip DDP's gradient all-reduce (per-replica ascent)."""
        return self.distributed is None or not self.distributed.local_ascent

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """``model.no_sync()`` when gradients must stay local in this pass, else a null context."""
        return contextlib.nullcontext() if self.sync_gradients else model.no_sync()

    # ----------------------------------------------------------------- the update
    @torch.no_grad()
    def step(self, closure: Closure | None = None, *, loss: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """One sharpness-aware update. ``closure`` computes the loss on the batch and backpropagates.

        With ``loss`` given, the caller has already run the first pass: ``.grad`` holds the gradient
        at θ and ``loss`` its loss, and the closure runs only the later passes (integrations whose
        framework computes the first pass itself, e.g. fairseq's trainer). Such a closure replays any
        RNG state itself and skips backward while ``opt.probing`` is True (probes run under no_grad).
        """
        self._check_groups()
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a closure: a sharpness-aware update evaluates the batch "
                "several times. Write `def closure(): loss = criterion(model(x), y); opt.backward(loss); "
                f"return loss` and call `opt.step(closure)`.{self.closure_hint}")
        ctx = Update(closure=closure)
        if loss is None:
            self._probes_without_grad = False
            devices = {p.device for g in self.param_groups for p in g["params"]}
            ctx.rng = _RngReplay(devices) if self.hp.replay_rng else _NoReplay()
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad = None
            loss0 = self._gradient_pass(ctx, first=True)
        else:
            self._probes_without_grad = True
            ctx.rng = _NoReplay()
            loss0 = loss
        self._collect(ctx)
        if not ctx.params:
            return loss0.detach()
        if any(p.grad.is_sparse for p in ctx.params):
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        if self.grad_scaler is not None:
            ctx.loss_scale = float(self.grad_scaler.get_scale())
        if not self._measure(ctx, loss0):
            return self._skip(ctx, loss0)
        self._save(ctx)
        try:
            ok = self._ascend_and_combine(ctx)
        finally:
            self._restore(ctx)
        if not ok:
            return self._skip(ctx, loss0)
        self._finish(ctx)
        return loss0.detach()

    def _collect(self, ctx: Update) -> None:
        """The parameters with a gradient, each group's span of them, and the spans of equal per-group
        values (consecutive groups that differ only in keys the base reads share one span)."""
        names = [h.name for h in self._group_hyperparameters()]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            values = {name: group[name] for name in names}
            start = len(ctx.params)
            ctx.params += params
            ctx.groups.append((group, Span(start, len(ctx.params), values)))
            if ctx.spans and ctx.spans[-1].hp == values:
                ctx.spans[-1].stop = len(ctx.params)
            else:
                ctx.spans.append(Span(start, len(ctx.params), values))

    def _ascend_and_combine(self, ctx: Update) -> bool:
        if not self._prepare(ctx):
            return False
        k = self.hp.steps
        for i in range(k + 1):
            if i > 0 and not self._measure(ctx, self._gradient_pass(ctx)):
                return False
            if i < k:
                self._ascend(ctx, i)
            self._observe(ctx, i)
        return self._combine(ctx)

    def _gradient_pass(self, ctx: Update, first: bool = False) -> Tensor:
        """Run the closure for a gradient at the current parameters, starting from empty ``.grad``."""
        if not first:
            for p in ctx.params:
                p.grad = None
            ctx.rng.replay()
        with torch.enable_grad():
            loss = ctx.closure()
        if not isinstance(loss, Tensor):
            raise TypeError(f"{type(self).__name__}: the closure must return the loss tensor, "
                            f"got {type(loss).__name__}")
        return loss

    def _forward_pass(self, ctx: Update) -> Tensor:
        """Evaluate the loss at the current parameters without touching the stored gradients."""
        grads = [p.grad for p in ctx.params]
        for p in ctx.params:
            p.grad = None
        ctx.rng.replay()
        self._probing = True
        try:
            grad_mode = torch.no_grad() if self._probes_without_grad else torch.enable_grad()
            with grad_mode:
                loss = ctx.closure()
        finally:
            self._probing = False
            for p, g in zip(ctx.params, grads):
                p.grad = g
        return loss.detach()

    def _measure(self, ctx: Update, loss: Tensor) -> bool:
        """Record the loss and gradient norm of the latest pass; False if either is not finite (on any
        replica, when distributed)."""
        loss_value, norm, finite = self._to_host_checked(loss, global_norm(ctx.grads()))
        ctx.losses.append(loss_value)
        ctx.norms.append(norm)
        return finite

    def _to_host_checked(self, loss: Tensor, norm: Tensor) -> tuple[float, float, bool]:
        """Both values on the host, and whether both are finite here and, when distributed, on every
        replica: ranks must skip together (one host sync either way)."""
        if self.distributed is None:
            loss_value, norm_value = to_host(loss, norm)
            return loss_value, norm_value, math.isfinite(loss_value) and math.isfinite(norm_value)
        loss_value, norm_value, flag = to_host(loss, norm, self.distributed.all_finite(loss, norm))
        return loss_value, norm_value, flag == 1.0

    def _ascend(self, ctx: Update, i: int) -> None:
        """ϑ_{i+1} = ϑ_i + ρ_g/k · e/‖e‖ (ASAM groups: ρ_g/k · T²e/‖Te‖, T = |w| + η_g, T = 1 in the other
        groups), the norm taken over all groups; a zero direction does not move."""
        k = self.hp.steps
        direction = self._ascent_direction(ctx, i)
        if direction is None and not any(span.hp["adaptive"] for span in ctx.spans):
            if ctx.norms[i] > 0:
                grads = ctx.grads()
                for span in ctx.spans:
                    torch._foreach_add_(span.of(ctx.params), span.of(grads), alpha=span.hp["rho"] / k / ctx.norms[i])
            return
        owned = direction is not None
        vector = ctx.grads() if direction is None else direction
        parts, scales = [], []
        for span in ctx.spans:
            part, scale = span.of(vector), None
            if span.hp["adaptive"]:
                scale = torch._foreach_abs(span.of(ctx.params))
                torch._foreach_add_(scale, span.hp["eta"])
                part = torch._foreach_mul(part, scale)
            parts.append(part)
            scales.append(scale)
        norm_t = global_norm([t for part in parts for t in part])
        for span, part, scale in zip(ctx.spans, parts, scales):
            factor = torch.where(norm_t > 0, span.hp["rho"] / k / norm_t, torch.zeros_like(norm_t)).to(part[0].dtype)
            if scale is not None:
                torch._foreach_mul_(part, scale)
            if scale is not None or owned:
                torch._foreach_mul_(part, factor)
            else:
                part = torch._foreach_mul(part, factor)
            torch._foreach_add_(span.of(ctx.params), part)

    def _save(self, ctx: Update) -> None:
        """Back up θ (one buffer, reused across updates) and the normalization running stats."""
        if len(self._backup) != len(ctx.params) or any(
                b.shape != p.shape or b.device != p.device or b.dtype != p.dtype
                for b, p in zip(self._backup, ctx.params)):
            self._backup = [torch.empty_like(p) for p in ctx.params]
        torch._foreach_copy_(self._backup, ctx.params)
        if self.model is not None:
            buffers = running_stat_buffers(self.model)
            if len(self._bn_saved) != len(buffers):
                self._bn_saved = [torch.empty_like(b) for b in buffers]
            if buffers:
                torch._foreach_copy_(self._bn_saved, buffers)

    def _restore(self, ctx: Update) -> None:
        """θ back bit-identically (``copy_``), running stats as after pass 0, RNG as after pass 0."""
        torch._foreach_copy_(ctx.params, self._backup)
        if self.model is not None and self._bn_saved:
            torch._foreach_copy_(running_stat_buffers(self.model), self._bn_saved)
        ctx.rng.finish()

    def _skip(self, ctx: Update, loss0: Tensor) -> Tensor:
        """A non-finite pass: no base step, no state change; an AMP scaler is told so it backs off.
        ``last_skip`` says which pass it was, for training loops to report."""
        self.counters["skipped"] += 1
        self.stats = {"skipped": 1.0}
        i = len(ctx.losses) - 1
        failed = ctx.notes.get("failed_pass") or ("pass 0 (the gradient at θ)" if i == 0 else
                                                  f"pass {i} of {self.hp.steps} (the gradient at ϑ_{i})")
        where = " on at least one replica" if self.distributed is not None else ""
        self.last_skip = f"{failed} had a non-finite loss or gradient{where}"
        if self.grad_scaler is not None and ctx.params:
            ctx.params[0].grad = torch.full_like(ctx.params[0], float("nan"))
            self.grad_scaler.unscale_(self.base)
        for p in ctx.params:
            p.grad = None
        return loss0.detach()

    def _finish(self, ctx: Update) -> None:
        """Reduce across replicas, unscale once, clip, commit staged state, base step."""
        grads = ctx.grads()
        if self.distributed is not None and self.distributed.local_ascent:
            self.distributed.mean_(grads)
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.base)
        if self.hp.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(ctx.params, self.hp.max_grad_norm, foreach=True)
        for key, tensors in ctx.pending_tensors.items():
            for p, t in zip(ctx.params, tensors):
                self.state[p][key] = t
        self.scalars.update(ctx.pending_scalars)
        for key, count in ctx.pending_counts.items():
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
        self._after_base_step(ctx)

    def _keep_grads(self, ctx: Update, key: str) -> list[Tensor]:
        """Keep this pass's gradient tensors alive under ``key`` (no copy; the next pass allocates anew)."""
        grads = ctx.grads()
        ctx.kept[key] = grads
        return grads

    # ----------------------------------------------------------------- state
    def _ordered_params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The base optimizer's state dict plus a ``"sam"`` entry with the variant's own state."""
        state = self.base.state_dict()
        index = {id(p): i for i, p in enumerate(self._ordered_params())}
        state["sam"] = {
            "variant": self.name,
            "base": self._base_name(),
            "counters": dict(self.counters),
            "scalars": dict(self.scalars),
            "state": {index[id(p)]: dict(s) for p, s in self.state.items() if s and id(p) in index},
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        state_dict = dict(state_dict)
        sam = state_dict.pop("sam", None)
        if sam is None or sam.get("variant") != self.name:
            found = None if sam is None else sam.get("variant")
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected a state dict of variant "
                             f"{self.name!r}, got {found!r}")
        if sam.get("base", self._base_name()) != self._base_name():
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict was saved with base optimizer "
                             f"{sam['base']}, this optimizer's base is {self._base_name()}; the base's state "
                             "(momentum buffers, Adam moments) does not carry over to another base")
        self._checked_group_values(state_dict["param_groups"])
        self.base.load_state_dict(state_dict)
        self.param_groups = self.base.param_groups
        self._check_groups()
        params = self._ordered_params()
        self.state = defaultdict(dict)
        for i, entries in sam["state"].items():
            p = params[int(i)]
            self.state[p] = {k: v.to(device=p.device, dtype=p.dtype) if isinstance(v, Tensor) else v
                             for k, v in entries.items()}
        self.counters = {**self._fresh_counters(), **sam["counters"]}
        self.scalars = {**self._fresh_scalars(), **sam["scalars"]}

    def _base_name(self) -> str:
        cls = type(self.base)
        return f"{cls.__module__}.{cls.__qualname__}"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)


class _Namespace:
    """Validated hyperparameters as attributes (``opt.hp.rho``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.__dict__.items())

    def __repr__(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self)


def _signature(cls: type[SharpnessAware]) -> inspect.Signature:
    """``inspect.signature`` of a variant: its declared hyperparameters as keyword arguments."""
    P = inspect.Parameter
    params = [P("params", P.POSITIONAL_OR_KEYWORD),
              P("base", P.POSITIONAL_OR_KEYWORD, default="sgd"),
              P("model", P.KEYWORD_ONLY, default=None), P("grad_scaler", P.KEYWORD_ONLY, default=None),
              P("distributed", P.KEYWORD_ONLY, default=None)]
    params += [P(h.name, P.KEYWORD_ONLY, default=h.default, annotation=h.kind) for h in cls.hyperparameters]
    params.append(P("base_kwargs", P.VAR_KEYWORD))
    return inspect.Signature(params)
