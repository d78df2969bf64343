"""timm integration: ``import timm_ext`` registers every sam_plugins variant in timm's optimizer
registry (``timm.optim.create_optimizer_v2(model, opt="xsam", base="adamw", ...)``)."""

from .registry import register_all

register_all()
