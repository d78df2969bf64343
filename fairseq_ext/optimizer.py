"""Every sam_plugins variant as a fairseq optimizer (``--optimizer NAME``).

Flags are generated from the core declarations with one naming rule: hyperparameter ``x`` becomes
``--sam-x`` (underscores as dashes); a hyperparameter whose default is True becomes the switch
``--sam-no-x``, since fairseq turns a True-default bool into a flag that sets False. The base
optimizer is ``--sam-base`` (fairseq's AdamW-style ``adam`` by default, ``sgd`` or ``nag``) and reads
fairseq's usual flags (``--adam-betas``, ``--adam-eps``, ``--weight-decay``, ``--momentum``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import field, make_dataclass
from itertools import chain
from typing import Any, Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import utils as distributed_utils
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from fairseq.optim.nag import FairseqNAG, FairseqNAGConfig
from omegaconf import II

import sam_plugins
from sam_plugins import Hyper, SharpnessAware

logger = logging.getLogger(__name__)
OPTIONAL_FLOAT = Optional[float]  # noqa: UP045  (fairseq's parser reads typing.Optional, not float | None)
BASES = ("adam", "sgd", "nag")
# The flags each base reads beside --weight-decay, with the defaults of fairseq's own optimizer of that name
# (--optimizer nag: momentum 0.99; fairseq's sgd: momentum 0). A flag the chosen base does not read is refused,
# as fairseq's parser refuses `--optimizer adam --momentum 0.9`.
BASE_FLAGS: dict[str, dict[str, Any]] = {
    "adam": {"adam_betas": str(FairseqAdamConfig.__dataclass_fields__["adam_betas"].default),  # as the CLI gives it
             "adam_eps": FairseqAdamConfig.__dataclass_fields__["adam_eps"].default},
    "sgd": {"momentum": 0.0},
    "nag": {"momentum": FairseqNAGConfig.__dataclass_fields__["momentum"].default},
}


def flag_field(h: Hyper) -> tuple[str, Any, Any]:
    """The dataclass field of a core hyperparameter, named by the rule above."""
    meta = {"help": f"{h.help} ({h.allowed()}; default: {h.default})"}
    if h.kind is bool and h.default is True:
        return f"sam_no_{h.name}", bool, field(default=False, metadata={"help": f"turn off: {h.help} (on by default)"})
    kind = ChoiceEnum(list(h.choices)) if h.choices is not None else h.kind
    return f"sam_{h.name}", kind, field(default=h.default, metadata=meta)


def flag_value(cfg: Any, h: Hyper) -> Any:
    name, _, _ = flag_field(h)
    value = getattr(cfg, name)
    if name.startswith("sam_no_"):
        return not value
    return str(value) if h.choices is not None else value


def make_config(cls: type[SharpnessAware]) -> type[FairseqDataclass]:
    """``--optimizer NAME``'s dataclass: the base optimizer's flags plus the variant's."""
    fields = [
        ("sam_base", ChoiceEnum(list(BASES)), field(default="adam", metadata={
            "help": "base optimizer (default: adam, fairseq's AdamW-style adam; sgd: torch's; nag: fairseq's)"})),
        ("adam_betas", Any, field(default=None, metadata={
            "help": f"betas of the adam base (default: {BASE_FLAGS['adam']['adam_betas']})"})),
        ("adam_eps", OPTIONAL_FLOAT, field(default=None, metadata={
            "help": f"epsilon of the adam base (default: {BASE_FLAGS['adam']['adam_eps']})"})),
        ("weight_decay", float, field(default=0.0, metadata={"help": "weight decay (decoupled for adam)"})),
        ("momentum", OPTIONAL_FLOAT, field(default=None, metadata={
            "help": f"momentum of the sgd and nag bases (default: sgd {BASE_FLAGS['sgd']['momentum']}, "
                    f"nag {BASE_FLAGS['nag']['momentum']}, as fairseq's own optimizers)"})),
        ("clip_norm", float, II("optimization.clip_norm")),
        ("tpu", bool, II("common.tpu")),
        ("amp", bool, II("common.amp")),
        ("memory_efficient_fp16", bool, II("common.memory_efficient_fp16")),
        ("memory_efficient_bf16", bool, II("common.memory_efficient_bf16")),
        ("ddp_backend", str, II("distributed_training.ddp_backend")),
        ("lr", list[float], II("optimization.lr")),
    ]
    fields += [flag_field(h) for h in cls.hyperparameters]
    return make_dataclass(f"Fairseq{cls.__name__}Config", fields, bases=(FairseqDataclass,))


def base_values(cfg: Any) -> dict[str, Any]:
    """The chosen base's own flags (the given value, else the default of fairseq's optimizer of that name);
    a flag of another base is refused."""
    base = str(cfg.sam_base)
    for name in sorted(set(chain(*BASE_FLAGS.values())) - set(BASE_FLAGS[base])):
        if getattr(cfg, name) is not None:
            readers = " and ".join(b for b in BASES if name in BASE_FLAGS[b])
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: a flag of the {readers} base; this "
                             f"run's base is {base} (--sam-base {base}), which does not read it")
    given = {name: getattr(cfg, name) for name in BASE_FLAGS[base]}
    return {name: default if given[name] is None else given[name] for name, default in BASE_FLAGS[base].items()}


def base_factory(cfg: Any) -> Callable[[Iterable[Any]], torch.optim.Optimizer]:
    """Build the base exactly as fairseq's own optimizer of that name would (FusedAdam on GPU too)."""
    name, values = str(cfg.sam_base), base_values(cfg)
    if name == "adam":
        adam = FairseqAdamConfig(**values, weight_decay=cfg.weight_decay, tpu=cfg.tpu, lr=list(cfg.lr))
        return lambda params: FairseqAdam(adam, params).optimizer
    if name == "nag":
        nag = FairseqNAGConfig(**values, weight_decay=cfg.weight_decay, lr=list(cfg.lr))
        return lambda params: FairseqNAG(nag, params).optimizer
    if name == "sgd":
        return lambda params: torch.optim.SGD(params, lr=cfg.lr[0], **values, weight_decay=cfg.weight_decay)
    raise ValueError(f"--sam-base {name!r} is invalid; choose one of {list(BASES)}")


class FairseqSAM(FairseqOptimizer):
    """A fairseq optimizer holding a sam_plugins variant; the update itself runs in
    ``task.optimizer_step`` (see ``fairseq_ext.hooks``), where every micro-batch can be replayed."""

    variant: type[SharpnessAware]

    def __init__(self, cfg: Any, params: Iterable[Any]) -> None:
        super().__init__(cfg)
        self._refuse_unsupported_setups(cfg)
        hyper = {h.name: flag_value(cfg, h) for h in self.variant.hyperparameters}
        distributed = None
        if distributed_utils.get_data_parallel_world_size() > 1:
            distributed = sam_plugins.Distributed(group=distributed_utils.get_data_parallel_group())
        try:
            self._optimizer = self.variant(params, base_factory(cfg), distributed=distributed, **hyper)
        except ValueError as err:
            raise ValueError(f"--optimizer {self.variant.name}: {err} (flags are --sam-<name>)") from err
        if (cfg.memory_efficient_fp16 or cfg.memory_efficient_bf16) and not self.supports_memory_efficient_fp16:
            raise ValueError(f"--optimizer {self.variant.name} --sam-base {cfg.sam_base} cannot step fp16/bf16 "
                             f"parameters in place (--memory-efficient-fp16/bf16): {type(self.core.base).__name__} "
                             "keeps its state in the parameters' precision; use --sam-base adam or nag (fp32 state), "
                             "or --fp16 (fp32 master weights)")
        # fairseq's loader would write the saved base state into the variant's own; load_state_dict does it right
        self._optimizer.disable_mem_eff_fp16_loading_hack = True  # type: ignore[attr-defined]
        self.grad_factor: Any = 1.0
        self.first_loss: torch.Tensor | float = 0.0
        self.clip_norm = 0.0
        self.loss_scale = 1.0
        self.skipped_in_a_row = 0

    def _refuse_unsupported_setups(self, cfg: Any) -> None:
        name = self.variant.name
        if cfg.amp:
            raise ValueError(f"--optimizer {name} does not support --amp: fairseq's AMPOptimizer divides the "
                             "gradients by the loss scale twice and cannot replay passes; use --fp16")
        if cfg.clip_norm > 0 and cfg.sam_max_grad_norm > 0 and cfg.clip_norm != cfg.sam_max_grad_norm:
            raise ValueError(f"--clip-norm {cfg.clip_norm} and --sam-max-grad-norm {cfg.sam_max_grad_norm}: both clip "
                             f"the update direction of --optimizer {name}; give one of them")
        if cfg.ddp_backend == "fully_sharded":
            raise ValueError(f"--optimizer {name} does not support --ddp-backend fully_sharded: each rank holds a "
                             "shard of the parameters, so the ascent's gradient norm and XSAM's probe plane would be "
                             "per shard; use --ddp-backend c10d, legacy_ddp or no_c10d")

    def load_state_dict(self, state_dict: dict[str, Any], optimizer_overrides: dict[str, Any] | None = None) -> None:
        """The variant's and its base's state; another variant or base is refused with fairseq's advice. The per-group
        --sam-* values of this command line replace the checkpoint's (a change is logged), as the global ones do;
        under --memory-efficient-fp16/bf16 the base's fp32 state is kept uncast, as fairseq keeps a plain
        optimizer's; --optimizer-overrides apply last, as in fairseq."""
        try:
            self.core.load_state_dict(state_dict)
        except ValueError as err:
            raise ValueError(f"--optimizer {self.variant.name} --sam-base {self.cfg.sam_base}: {err}. "
                             "Add --reset-optimizer to start the optimizer afresh from this checkpoint") from err
        for h in self.variant.hyperparameters:
            if not h.per_group:
                continue
            value = flag_value(self.cfg, h)
            saved = {group[h.name] for group in self.param_groups}
            if saved != {value}:
                flag = flag_field(h)[0].replace("_", "-")
                logger.info(f"--{flag} {value} replaces the checkpoint's {', '.join(map(str, sorted(saved)))}")
            for group in self.param_groups:
                group[h.name] = value
        if self.cfg.memory_efficient_fp16 or self.cfg.memory_efficient_bf16:
            self._restore_uncast_base_state(state_dict)
        for group in self.param_groups:
            group.update(optimizer_overrides or {})

    def _restore_uncast_base_state(self, state_dict: dict[str, Any]) -> None:
        """torch's load casts the base's state to the parameters' fp16/bf16; put the saved fp32 tensors back."""
        base = self.core.base
        saved_ids = chain(*(group["params"] for group in state_dict["param_groups"]))
        params = dict(zip(saved_ids, chain(*(group["params"] for group in base.param_groups))))
        for saved_id, entries in state_dict["state"].items():
            p = params[saved_id]
            base.state[p] = {k: v.to(p.device) if isinstance(v, torch.Tensor) else v for k, v in entries.items()}

    @property
    def core(self) -> SharpnessAware:
        return self._optimizer

    @property
    def optimizer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"lr": self.cfg.lr[0], "weight_decay": self.cfg.weight_decay}
        values = base_values(self.cfg)
        if "adam_betas" in values:
            betas = values["adam_betas"]
            config.update(betas=eval(betas) if isinstance(betas, str) else tuple(betas), eps=values["adam_eps"])
        else:
            config["momentum"] = values["momentum"]
        return config

    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return bool(getattr(self.core.base, "supports_memory_efficient_fp16", False))

    def step(self, closure: Any = None, scale: float = 1.0, groups: Any = None) -> None:
        raise RuntimeError(f"--optimizer {self.variant.name} updates inside task.optimizer_step; load "
                           "fairseq_ext with --user-dir so its trainer hooks are installed")


def register_variant(variant: type[SharpnessAware]) -> None:
    """Register a fairseq optimizer for one core variant (idempotent)."""
    from fairseq.optim import OPTIMIZER_REGISTRY

    if variant.name in OPTIMIZER_REGISTRY:
        return
    cls = type(f"Fairseq{variant.__name__}", (FairseqSAM,), {"variant": variant, "__doc__": variant.__doc__})
    register_optimizer(variant.name, dataclass=make_config(variant))(cls)


def register_all() -> None:
    """A fairseq optimizer for every core variant, now and registered later."""
    sam_plugins.on_register(register_variant)
