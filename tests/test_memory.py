"""Parameter-sized tensors alive while SAM and XSAM run, counted in every pass of an update."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import sam_plugins

SHAPE = (53, 37)


def alive(shape: tuple[int, ...]) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, nn.Parameter) and tuple(o.shape) == shape)


@pytest.mark.parametrize(("name", "hyper", "grad_pass_limit", "probe_limit"), [
    ("sam", {"steps": 2}, 1, None),
    ("xsam", {"steps": 2, "probe_every": 1}, 1, 3),
])
def test_extra_parameter_sized_tensors(name, hyper, grad_pass_limit, probe_limit):
    """Beyond the parameter: one backup in gradient passes; during probes the backup, Δ and the held g_k."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(37, 53), nn.Tanh(), nn.Linear(53, 4))
    x, y = torch.randn(8, 37), torch.randn(8, 4)
    opt = sam_plugins.create(name, model.parameters(), lr=0.01, **hyper)
    seen: list[tuple[bool, int]] = []

    def closure():
        if opt.counters["updates"] == 1:
            seen.append((torch.is_grad_enabled(), alive(SHAPE) - 1))
        loss = ((model(x) - y) ** 2).mean()
        opt.backward(loss)
        return loss

    for _ in range(2):
        opt.step(closure)
        assert alive(SHAPE) - 2 <= 1
    gradient_passes = [n for grad, n in seen if grad]
    probes = [n for grad, n in seen if not grad]
    assert max(gradient_passes) <= grad_pass_limit
    if probe_limit is None:
        assert not probes
    else:
        assert probes and max(probes) <= probe_limit
