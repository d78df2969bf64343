"""timm integration: the registry entries and create_optimizer_v2 in a closure loop."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import CosineLRScheduler

import sam_plugins
import timm_ext  # noqa: F401

pytestmark = pytest.mark.timm


def batch(seed=0, n=8, classes=5, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_every_variant_is_listed():
    assert set(sam_plugins.available()) <= set(list_optimizers())


@pytest.mark.parametrize("name", sam_plugins.available())
@pytest.mark.parametrize(("base", "kwargs"), [("momentum", {"momentum": 0.9}), ("adamw", {"betas": (0.9, 0.99)})])
def test_every_variant_trains_through_create_optimizer_v2(name, base, kwargs):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5)
    opt = create_optimizer_v2(model, opt=name, lr=0.05 if base == "momentum" else 1e-3, weight_decay=1e-4,
                              base=base, rho=0.05, model=model, **kwargs)
    assert isinstance(opt, sam_plugins.get(name))
    x, y = batch()
    losses = []
    for _ in range(4):
        losses.append(float(sam_plugins.update(opt, lambda: torch.nn.functional.cross_entropy(model(x), y))))
    assert losses[-1] < losses[0]
    assert opt.counters["updates"] == 4


def test_param_groups_and_base_come_from_timm():
    model = timm.create_model("test_vit", num_classes=5)
    opt = create_optimizer_v2(model, opt="xsam", lr=0.1, weight_decay=0.05, momentum=0.8, base="sgd",
                              eps=1e-3, betas=(0.1, 0.2))
    assert type(opt.base) is torch.optim.SGD
    assert opt.base.defaults["nesterov"] is True and opt.base.defaults["momentum"] == 0.8
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert opt.param_groups is opt.base.param_groups
    adam = create_optimizer_v2(model, opt="sam", lr=1e-3, weight_decay=0.05, momentum=0.8, base="adamw",
                               betas=(0.8, 0.9))
    assert type(adam.base) is torch.optim.AdamW and adam.base.defaults["betas"] == (0.8, 0.9)


def test_layer_decay_and_timm_scheduler():
    model = timm.create_model("test_vit", num_classes=5)
    opt = create_optimizer_v2(model, opt="xsam", lr=1e-3, weight_decay=0.05, base="adamw", layer_decay=0.7)
    scales = sorted({round(g["lr_scale"], 6) for g in opt.param_groups})
    assert len(scales) > 2 and scales[-1] == 1.0
    sched = CosineLRScheduler(opt, t_initial=10, warmup_t=2, warmup_lr_init=1e-5)
    sched.step(1)
    lrs = [g["lr"] for g in opt.base.param_groups]
    assert len(set(round(v, 12) for v in lrs)) == len(scales)
    assert max(lrs) < 1e-3


@pytest.mark.parametrize(("base", "message"), [
    ("adamm", r"unknown base optimizer 'adamm'; did you mean adam, radam, nadam\? timm's plain optimizers: ada"),
    ("xsam", r"base='xsam' is itself a sharpness-aware variant"),
])
def test_bad_base_is_refused(base, message):
    with pytest.raises(ValueError, match=message) as error:
        create_optimizer_v2(timm.create_model("test_resnet"), opt="sam", lr=0.1, base=base)
    assert not any(f" {name}," in str(error.value) for name in sam_plugins.available())  # variants are no base


def test_step_without_closure_points_to_the_entry_point():
    opt = create_optimizer_v2(timm.create_model("test_resnet"), opt="xsam", lr=0.1)
    with pytest.raises(RuntimeError, match=r"timm's own train.py calls step\(\) without one; run `python -m timm_ext"):
        opt.step()
