"""Per-group hyperparameters as torch.optim users expect them, checked against independent float64 formulas."""

from __future__ import annotations

import io

import pytest
import torch
from reference import SHAPES, ascend, flat, grad_at, loss_at, make_data, make_model, unit
from torch import nn

import sam_plugins

SIZES = [torch.Size(s).numel() for s in SHAPES]  # w1, b1, w2, b2 of the reference MLP


def per_element(values: list[float]) -> torch.Tensor:
    """One value per parameter tensor of the reference MLP, spread over its elements."""
    return torch.cat([torch.full((n,), float(v), dtype=torch.float64) for n, v in zip(SIZES, values)])


def per_layer(first: float, second: float) -> torch.Tensor:
    """``first`` on the first layer's weight and bias, ``second`` on the second layer's."""
    return per_element([first, first, second, second])


def two_layer_groups(model: nn.Module, first: dict, second: dict) -> list[dict]:
    return [{"params": list(model[0].parameters()), **first}, {"params": list(model[2].parameters()), **second}]


def weight_and_bias_groups(model: nn.Module, weights: dict, biases: dict) -> list[dict]:
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n.endswith("weight")], **weights},
            {"params": [p for n, p in named if n.endswith("bias")], **biases}]


def step_once(opt, model, x, y):
    def closure():
        loss = ((model(x) - y) ** 2).mean()
        opt.backward(loss)
        return loss

    return opt.step(closure)


def sgd_point(theta: torch.Tensor, direction: torch.Tensor, lr: float) -> torch.Tensor:
    return theta - lr * direction


def reorder(vector: torch.Tensor, order: list[int]) -> torch.Tensor:
    """A flat vector in the optimizer's parameter order (``order`` indexes the model's tensors)."""
    parts = list(torch.split(vector, SIZES))
    return torch.cat([parts[i] for i in order])


def test_rho_per_group_scales_each_group_with_the_global_norm():
    """davda54's SAM with per-group ρ: ε = ρ_g·g/‖g‖, the norm over all groups."""
    x, y = make_data()
    model = make_model()
    theta = flat(model)
    opt = sam_plugins.create("sam", two_layer_groups(model, {"rho": 0.1}, {"rho": 0.4}), lr=0.1)
    step_once(opt, model, x, y)
    g = grad_at(theta, x, y)
    eps = per_layer(0.1, 0.4) * unit(g)
    expected = sgd_point(theta, grad_at(theta + eps, x, y), 0.1)
    torch.testing.assert_close(flat(model), expected, rtol=1e-10, atol=1e-12)
    assert [g["rho"] for g in opt.param_groups] == [0.1, 0.4]


def test_asam_on_weights_only_as_the_official_code():
    """SamsungLabs ASAM: T = |w| + η on weights, T = 1 on biases, ε = ρ·T²g/‖Tg‖ with one global norm."""
    rho, eta = 0.5, 0.05
    x, y = make_data()
    model = make_model()
    theta = flat(model)
    groups = weight_and_bias_groups(model, {}, {"adaptive": False})
    opt = sam_plugins.create("asam", groups, lr=0.1, rho=rho, eta=eta)
    step_once(opt, model, x, y)
    is_weight = per_element([1, 0, 1, 0]).bool()
    t = torch.where(is_weight, theta.abs() + eta, torch.ones_like(theta))
    g = grad_at(theta, x, y)
    eps = rho * t * t * g / torch.linalg.vector_norm(t * g)
    expected = sgd_point(theta, grad_at(theta + eps, x, y), 0.1)
    order = [0, 2, 1, 3]  # the optimizer holds the weights' group first
    got = torch.cat([p.detach().reshape(-1) for grp in opt.param_groups for p in grp["params"]])
    torch.testing.assert_close(got, reorder(expected, order), rtol=1e-10, atol=1e-12)
    everything = make_model()
    sam_plugins.create("asam", everything.parameters(), lr=0.1, rho=rho, eta=eta)
    assert not torch.equal(flat(everything), flat(model))


def test_fsam_sigma_and_lambda_per_group():
    rho, sigmas, lams = 0.2, (0.5, 1.0), (0.6, 0.9)
    x, y = make_data()
    model = make_model()
    groups = two_layer_groups(model, {"sigma": sigmas[0], "lam": lams[0]}, {"sigma": sigmas[1], "lam": lams[1]})
    opt = sam_plugins.create("fsam", groups, lr=0.1, rho=rho)
    sigma, lam = per_layer(*sigmas), per_layer(*lams)
    theta, ema = flat(model), None
    for _ in range(3):
        g = grad_at(theta, x, y)
        ascent = g if ema is None else g - sigma * ema
        perturbed = grad_at(theta + rho * unit(ascent), x, y)
        ema = g.clone() if ema is None else lam * ema + (1 - lam) * g
        theta = sgd_point(theta, perturbed, 0.1)
        step_once(opt, model, x, y)
    torch.testing.assert_close(flat(model), theta, rtol=1e-10, atol=1e-12)


def test_decoupled_wsam_uses_each_groups_lr_and_gamma():
    rho, gammas, lrs = 0.2, (0.8, 0.5), (0.1, 0.02)
    x, y = make_data()
    model = make_model()
    groups = two_layer_groups(model, {"gamma": gammas[0], "lr": lrs[0]}, {"gamma": gammas[1], "lr": lrs[1]})
    opt = sam_plugins.create("wsam", groups, lr=0.1, rho=rho)
    theta = flat(model)
    step_once(opt, model, x, y)
    weight, lr = per_layer(*(gamma / (1 - gamma) for gamma in gammas)), per_layer(*lrs)
    g0 = grad_at(theta, x, y)
    g1 = grad_at(theta + rho * unit(g0), x, y)
    expected = theta - lr * g0 - lr * weight * (g1 - g0)
    torch.testing.assert_close(flat(model), expected, rtol=1e-10, atol=1e-12)


def test_a_scheduler_writing_rho_schedules_it():
    x, y = make_data()
    model = make_model()
    opt = sam_plugins.create("sam", model.parameters(), lr=0.1, rho=0.3)
    opt.param_groups[0]["rho"] = 0.05
    theta = flat(model)
    step_once(opt, model, x, y)
    g = grad_at(theta, x, y)
    expected = sgd_point(theta, grad_at(theta + 0.05 * unit(g), x, y), 0.1)
    torch.testing.assert_close(flat(model), expected, rtol=1e-10, atol=1e-12)
    assert opt.stats["rho"] == 0.05
    assert loss_at(flat(model), x, y) < loss_at(theta, x, y)


def test_misspelled_group_key_is_refused_naming_the_known_keys():
    model = make_model()
    with pytest.raises(ValueError, match=r"param_groups\[1\] has unknown key\(s\) \['rhoo'\]; known keys: .*'rho'"):
        sam_plugins.create("sam", two_layer_groups(model, {}, {"rhoo": 0.1}), lr=0.1)


def test_global_hyperparameter_in_a_group_is_refused():
    model = make_model()
    with pytest.raises(ValueError, match=r"param_groups\[0\] sets \['rho_m'\], which are global"):
        sam_plugins.create("xsam", two_layer_groups(model, {"rho_m": 0.5}, {}), lr=0.1)


def test_framework_group_keys_are_accepted_once_declared():
    """The core knows torch's keys only; a framework (timm's layer decay) declares its own with group_keys."""
    model = make_model()
    groups = two_layer_groups(model, {"lr_scale": 0.5, "name": "first"}, {})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr_scale', 'name'\].*group_keys="):
        sam_plugins.create("sam", groups, lr=0.1)
    opt = sam_plugins.create("sam", groups, lr=0.1, group_keys=("lr_scale", "name"))
    assert opt.param_groups[0]["lr_scale"] == 0.5


@pytest.mark.parametrize(("group", "pattern"), [
    ({"rho": -0.1}, r"SAM: param_groups\[1\]\['rho'\]=-0\.1 is invalid; allowed: a float in \(0\.0, inf\)"),
    ({"adaptive": 1}, r"param_groups\[1\]\['adaptive'\]=1 is invalid; allowed: True or False"),
    ({"eta": float("nan")}, r"param_groups\[1\]\['eta'\]=nan is invalid"),
])
def test_invalid_group_value_is_refused_at_construction(group, pattern):
    model = make_model()
    with pytest.raises(ValueError, match=pattern):
        sam_plugins.create("sam", two_layer_groups(model, {}, group), lr=0.1)


@pytest.mark.parametrize("name", ["sam", "wsam", "xsam", "fsam"])
def test_invalid_scheduled_value_is_refused_before_anything_changes(name):
    x, y = make_data()
    model = make_model()
    opt = sam_plugins.create(name, model.parameters(), base="adamw", lr=0.01)
    step_once(opt, model, x, y)
    theta, buffer, rho = flat(model), io.BytesIO(), opt.param_groups[0]["rho"]
    torch.save(opt.state_dict(), buffer)
    opt.param_groups[0]["rho"] = 0.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['rho'\]=0\.0 is invalid"):
        step_once(opt, model, x, y)
    assert torch.equal(flat(model), theta)
    opt.param_groups[0]["rho"] = rho
    after = io.BytesIO()
    torch.save(opt.state_dict(), after)
    assert after.getvalue() == buffer.getvalue()


def test_group_values_travel_in_the_state_dict():
    x, y = make_data()
    model = make_model()
    opt = sam_plugins.create("asam", weight_and_bias_groups(model, {"rho": 0.7}, {"adaptive": False}), lr=0.1)
    step_once(opt, model, x, y)
    state = opt.state_dict()
    saved = [(g["rho"], g["adaptive"], g["eta"]) for g in state["param_groups"]]
    assert saved == [(0.7, True, 0.01), (0.5, False, 0.01)]
    fresh = sam_plugins.create("asam", weight_and_bias_groups(make_model(), {}, {}), lr=0.1)
    fresh.load_state_dict(state)
    assert [(g["rho"], g["adaptive"]) for g in fresh.param_groups] == [(0.7, True), (0.5, False)]
    state["param_groups"][0]["rho"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['rho'\]=-1\.0 is invalid"):
        fresh.load_state_dict(state)
    assert fresh.param_groups[0]["rho"] == 0.7


def test_add_param_group_takes_the_constructor_defaults_and_validates():
    model = make_model()
    opt = sam_plugins.create("fsam", model[0].parameters(), lr=0.1, rho=0.2, sigma=0.5)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['sigma'\]=-1 is invalid"):
        opt.add_param_group({"params": list(model[2].parameters()), "sigma": -1})
    assert len(opt.param_groups) == len(opt.base.param_groups) == 1
    opt.add_param_group({"params": list(model[2].parameters()), "lam": 0.5})
    assert opt.param_groups is opt.base.param_groups
    assert [(g["rho"], g["sigma"], g["lam"]) for g in opt.param_groups] == [(0.2, 0.5, 0.9), (0.2, 0.5, 0.5)]


class TestRhoFollowsLR:
    def test_follows_each_groups_lr_and_clamps(self):
        model = make_model()
        opt = sam_plugins.create("sam", two_layer_groups(model, {"rho": 0.4}, {"lr": 0.05}), lr=0.1, rho=0.2)
        schedule = sam_plugins.RhoFollowsLR(opt, rho_min=0.1, lr_min=0.01)
        opt.param_groups[0]["lr"] = 0.055
        opt.param_groups[1]["lr"] = 0.001
        assert schedule.step() == pytest.approx([0.1 + 0.3 * 0.5, 0.1])
        opt.param_groups[0]["lr"] = 0.2
        assert schedule.step()[0] == pytest.approx(0.4)

    def test_state_dict_round_trip(self):
        opt = sam_plugins.create("gsam", make_model().parameters(), lr=0.1, rho=0.3)
        schedule = sam_plugins.RhoFollowsLR(opt, rho_min=0.1)
        other = sam_plugins.RhoFollowsLR(sam_plugins.create("gsam", make_model().parameters(), lr=1.0), rho_min=0.0)
        other.load_state_dict(schedule.state_dict())
        assert other.state_dict() == schedule.state_dict() == {
            "rho_min": 0.1, "lr_min": 0.0, "rho_max": [0.3], "lr_max": [0.1]}

    @pytest.mark.parametrize(("kwargs", "pattern"), [
        ({"rho_min": 0.5}, r"rho_min=0\.5 is invalid; allowed: a float in \[0, 0\.3\]"),
        ({"rho_min": 0.1, "lr_min": 0.1}, r"lr_min=0\.1 is invalid"),
    ])
    def test_bad_values(self, kwargs, pattern):
        opt = sam_plugins.create("gsam", make_model().parameters(), lr=0.1, rho=0.3)
        with pytest.raises(ValueError, match=pattern):
            sam_plugins.RhoFollowsLR(opt, **kwargs)


def test_timm_lookahead_over_sam_equals_an_independent_computation():
    """timm's Lookahead forwards the closure to its base: every k = 2 SAM steps the slow weights move α
    of the way to the fast ones and the fast weights restart there (timm's slow weights start as the
    fast ones at the first sync)."""
    from timm.optim import Lookahead

    rho, lr, alpha, k = 0.2, 0.3, 0.5, 2
    x, y = make_data()
    model = make_model()
    sam = sam_plugins.create("sam", model.parameters(), base="sgd", lr=lr, rho=rho)
    opt = Lookahead(sam, alpha=alpha, k=k)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        sam.backward(loss)
        return loss

    for _ in range(4):
        opt.step(closure)
    fast, slow = flat(make_model()), None
    for t in range(1, 5):
        _, grads = ascend(fast, x, y, rho, 1)
        fast = fast - lr * grads[-1]
        if t % k == 0:
            slow = fast if slow is None else slow  # timm starts the slow weights at the first sync
            slow = slow + alpha * (fast - slow)
            fast = slow
    torch.testing.assert_close(flat(model), fast, rtol=1e-12, atol=1e-12)
