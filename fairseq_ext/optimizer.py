"""Every sam_plugins variant as a fairseq optimizer (``--optimizer NAME``).

Flags are generated from the core declarations with one naming rule: hyperparameter ``x`` becomes
``--sam-x`` (underscores as dashes); a hyperparameter whose default is True becomes the switch
``--sam-no-x``, since fairseq turns a True-default bool into a flag that sets False. The base
optimizer is ``--sam-base`` (fairseq's AdamW-style ``adam`` by default, ``sgd`` or ``nag``) and reads
fairseq's usual flags (``--adam-betas``, ``--adam-eps``, ``--weight-decay``, ``--momentum``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import field, make_dataclass
from typing import Any

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.distributed import utils as distributed_utils
from fairseq.optim import FairseqOptimizer, register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig
from fairseq.optim.nag import FairseqNAG, FairseqNAGConfig
from omegaconf import II

import sam_plugins
from sam_plugins import Hyper, SharpnessAware

BASES = ("adam", "sgd", "nag")


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
        ("sam_base", ChoiceEnum(list(BASES)), field(default="adam", metadata={"help": "base optimizer"})),
        ("adam_betas", Any, field(default="(0.9, 0.999)", metadata={"help": "betas for the adam base"})),
        ("adam_eps", float, field(default=1e-8, metadata={"help": "epsilon for the adam base"})),
        ("weight_decay", float, field(default=0.0, metadata={"help": "weight decay (decoupled for adam)"})),
        ("momentum", float, field(default=0.0, metadata={"help": "momentum for the sgd and nag bases"})),
        ("tpu", bool, II("common.tpu")),
        ("amp", bool, II("common.amp")),
        ("memory_efficient_fp16", bool, II("common.memory_efficient_fp16")),
        ("memory_efficient_bf16", bool, II("common.memory_efficient_bf16")),
        ("ddp_backend", str, II("distributed_training.ddp_backend")),
        ("lr", list[float], II("optimization.lr")),
    ]
    fields += [flag_field(h) for h in cls.hyperparameters]
    return make_dataclass(f"Fairseq{cls.__name__}Config", fields, bases=(FairseqDataclass,))


def base_factory(cfg: Any) -> Callable[[Iterable[Any]], torch.optim.Optimizer]:
    """Build the base exactly as fairseq's own optimizer of that name would (FusedAdam on GPU too)."""
    name = str(cfg.sam_base)
    if name == "adam":
        adam = FairseqAdamConfig(adam_betas=cfg.adam_betas, adam_eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
                                 tpu=cfg.tpu, lr=list(cfg.lr))
        return lambda params: FairseqAdam(adam, params).optimizer
    if name == "nag":
        nag = FairseqNAGConfig(momentum=cfg.momentum, weight_decay=cfg.weight_decay, lr=list(cfg.lr))
        return lambda params: FairseqNAG(nag, params).optimizer
    if name == "sgd":
        return lambda params: torch.optim.SGD(params, lr=cfg.lr[0], momentum=cfg.momentum,
                                              weight_decay=cfg.weight_decay)
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
        self.grad_factor: Any = 1.0
        self.first_loss: torch.Tensor | float = 0.0
        self.clip_norm = 0.0
        self.loss_scale = 1.0

    def _refuse_unsupported_setups(self, cfg: Any) -> None:
        name = self.variant.name
        if cfg.amp:
            raise ValueError(f"--optimizer {name} does not support --amp: fairseq's AMPOptimizer divides the "
                             "gradients by the loss scale twice and cannot replay passes; use --fp16")
        if cfg.ddp_backend == "fully_sharded":
            raise ValueError(f"--optimizer {name} does not support --ddp-backend fully_sharded: each rank holds a "
                             "shard of the parameters, so the ascent's gradient norm and XSAM's probe plane would be "
                             "per shard; use --ddp-backend c10d, legacy_ddp or no_c10d")

    def load_state_dict(self, state_dict: dict[str, Any], optimizer_overrides: dict[str, Any] | None = None) -> None:
        """Refuse optimizer state of another variant or base with fairseq's advice."""
        try:
            super().load_state_dict(state_dict, optimizer_overrides)
        except ValueError as err:
            raise ValueError(f"--optimizer {self.variant.name} --sam-base {self.cfg.sam_base}: {err}. "
                             "Add --reset-optimizer to start the optimizer afresh from this checkpoint") from err

    @property
    def core(self) -> SharpnessAware:
        return self._optimizer

    @property
    def optimizer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"lr": self.cfg.lr[0], "weight_decay": self.cfg.weight_decay}
        if str(self.cfg.sam_base) == "adam":
            betas = self.cfg.adam_betas
            config.update(betas=eval(betas) if isinstance(betas, str) else tuple(betas), eps=self.cfg.adam_eps)
        else:
            config["momentum"] = self.cfg.momentum
        return config

    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return bool(getattr(self.core.base, "supports_memory_efficient_fp16", False))

    def step(self, closure: Any = None, scale: float = 1.0, groups: Any = None) -> None:
        raise RuntimeError(f"--optimizer {self.variant.name} updates inside task.optimizer_step; load "
                           "fairseq_ext with --user-dir so its trainer hooks are installed")


def register_all() -> None:
    """Register a fairseq optimizer for every core variant (idempotent)."""
    from fairseq.optim import OPTIMIZER_REGISTRY

    for name in sam_plugins.available():
        if name in OPTIMIZER_REGISTRY:
            continue
        variant = sam_plugins.get(name)
        cls = type(f"Fairseq{variant.__name__}", (FairseqSAM,), {"variant": variant, "__doc__": variant.__doc__})
        register_optimizer(name, dataclass=make_config(variant))(cls)
