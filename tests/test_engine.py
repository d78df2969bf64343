"""Engine guarantees shared by every variant: exact restore, skips, AMP, BatchNorm, RNG, errors, state."""

from __future__ import annotations

import io
import math

import pytest
import torch
from helpers import mse_closure, state_bytes
from reference import flat, make_data, make_model
from torch import nn

import sam_plugins
from benchmarks.measure import DispatchCounter
from sam_plugins.tensors import polarized_cosine_
from sam_plugins.variants.xsam import Plane

ALL = sam_plugins.available()


@pytest.mark.parametrize("name", ALL)
def test_theta_restored_bit_identically(name):
    model = make_model()
    x, y = make_data()
    before = [p.detach().clone() for p in model.parameters()]
    opt = sam_plugins.create(name, model.parameters(), base="sgd", lr=0.0, rho=0.37, steps=2)
    opt.step(mse_closure(opt, model, x, y))
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad_call", [1, 2, 3])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_pass_skips_without_changing_anything(name, bad_call, bad_value):
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create(name, model.parameters(), base="adamw", lr=0.01, steps=2)
    opt.step(mse_closure(opt, model, x, y))
    params, state, counters = flat(model), state_bytes(opt), dict(opt.counters)
    loss = opt.step(mse_closure(opt, model, x, y, poison={bad_call: bad_value}))
    assert isinstance(loss, torch.Tensor)
    assert torch.equal(flat(model), params)
    after = opt.state_dict()
    assert after["sam"]["counters"] == {**counters, "skipped": 1}
    after["sam"]["counters"]["skipped"] = 0
    buffer = io.BytesIO()
    torch.save(after, buffer)
    assert buffer.getvalue() == state
    assert opt.stats["skipped"] == 1.0
    expected = {1: "pass 0 (the gradient at θ)", 2: "pass 1 of 2 (the gradient at ϑ_1)",
                3: "pass 2 of 2 (the gradient at ϑ_2)"}[bad_call]
    assert opt.last_skip == f"{expected} had a non-finite loss or gradient"
    opt.step(mse_closure(opt, model, x, y))
    assert (opt.counters["updates"], opt.counters["skipped"]) == (2, 1)


def test_exception_in_closure_restores_parameters():
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1)
    params = flat(model)
    inner = mse_closure(opt, model, x, y)

    def closure():
        if inner.calls["n"] == 3:
            raise KeyboardInterrupt
        return inner()

    with pytest.raises(KeyboardInterrupt):
        opt.step(closure)
    assert torch.equal(flat(model), params)


@pytest.mark.parametrize("name", ["sam", "xsam", "evsam", "fsam", "msamplus", "lsam", "gsam", "wsam"])
def test_grad_scaler_gives_the_same_update(name):
    """Loss scaling by a power of two changes no direction: results equal the unscaled run bit for bit (the engine
    divides the scale out after each pass and puts it back exactly for the scaler's step)."""
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        model = make_model()
        x, y = make_data()
        extra = {"grad_scale": "slope_m"} if name == "xsam" else {}
        opt = sam_plugins.create(name, model.parameters(), base="sgd", lr=0.1, momentum=0.9, steps=2,
                                 grad_scaler=scaler, **extra)
        for _ in range(3):
            opt.step(mse_closure(opt, model, x, y))
            if scaler is not None:
                scaler.update()
        results.append(flat(model))
    assert torch.equal(results[0], results[1])


def test_grad_scaler_backs_off_on_overflow():
    model = make_model()
    x, y = make_data()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1, grad_scaler=scaler)
    params = flat(model)
    opt.step(mse_closure(opt, model, x, y, poison={2: float("inf")}))
    scaler.update()
    assert scaler.get_scale() == 2.0**9
    assert torch.equal(flat(model), params)
    opt.step(mse_closure(opt, model, x, y))
    scaler.update()
    assert not torch.equal(flat(model), params)


@pytest.mark.parametrize("name", ["sam", "xsam", "fsam"])
def test_bf16_autocast_runs(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    opt = sam_plugins.create(name, model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.backward(loss)
        return loss

    losses = [float(opt.step(closure)) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", ALL)
def test_zero_gradient_is_no_perturbation_and_no_nan(name):
    model = make_model()
    opt = sam_plugins.create(name, model.parameters(), lr=0.1, momentum=0.9)
    params = flat(model)

    def closure():
        loss = sum((p * 0).sum() for p in model.parameters()) + 1.0
        opt.backward(loss)
        return loss

    opt.step(closure)
    assert torch.equal(flat(model), params)
    assert opt.counters["updates"] == 1


def test_parallel_gradients_psi_zero():
    """A linear loss has a constant gradient: v0 = v1, ψ = 0, and XSAM steps like SGD."""
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0.3, 0.4, -1.2], dtype=torch.float64)
    opt = sam_plugins.create("xsam", [w], lr=0.1)

    def closure():
        loss = w @ c
        opt.backward(loss)
        return loss

    opt.step(closure)
    assert opt.stats["psi"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 0.1 * c)


def test_plane_coefficients_degenerate_angles():
    assert Plane(1.0, 1.0, math.pi).coefficients(0.7) == (1.0, 0.0)
    assert Plane(1.0, 1.0, 0.0).coefficients(1.3) == (1.0, 0.0)
    assert Plane(0.0, 2.0, 0.0).coefficients(0.3) == (0.0, 1.0)
    c0, c1 = Plane(1.0, 1.0, math.pi / 2).coefficients(0.5)
    assert c0 == pytest.approx(math.sqrt(0.5)) and c1 == pytest.approx(math.sqrt(0.5))


def _random_list(generator):
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((3, 4), (5,), (2, 2, 2))]


def _as_vector(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def test_polarized_cosine_matches_a_dot_product_and_leaves_x_shifted():
    generator = torch.Generator().manual_seed(3)
    x, y = _random_list(generator), _random_list(generator)
    vx, vy = _as_vector(x), _as_vector(y)
    x_norm, y_norm = vx.norm().item(), vy.norm().item()
    cosine, shift = polarized_cosine_(x, y, x_norm, y_norm)
    assert cosine == pytest.approx((vx @ vy).item() / (x_norm * y_norm), rel=1e-12, abs=1e-14)
    assert shift == x_norm / y_norm
    torch.testing.assert_close(_as_vector(x), vx + shift * vy, rtol=1e-15, atol=1e-15)


def test_polarized_cosine_of_parallel_and_opposite_lists_is_clamped():
    y = _random_list(torch.Generator().manual_seed(4))
    y_norm = _as_vector(y).norm().item()
    assert polarized_cosine_([2 * t for t in y], y, 2 * y_norm, y_norm)[0] == 1.0
    assert polarized_cosine_([-2 * t for t in y], y, 2 * y_norm, y_norm)[0] == -1.0


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0, 1.7])
def test_plane_direction_is_the_slerp_of_the_unit_vectors(alpha):
    generator = torch.Generator().manual_seed(5)
    delta, grad = _random_list(generator), _random_list(generator)
    vd, vg = _as_vector(delta), _as_vector(grad)
    v0, v1 = vd / vd.norm(), vg / vg.norm()
    psi = torch.arccos(v0 @ v1)
    expected = (torch.sin((1 - alpha) * psi) * v0 + torch.sin(alpha * psi) * v1) / torch.sin(psi)
    plane = Plane.measure(delta, grad, vd.norm().item(), vg.norm().item())
    along_u, along_g = plane.direction(alpha)
    assert plane.psi == pytest.approx(psi.item(), rel=1e-12)
    torch.testing.assert_close(along_u * _as_vector(delta) + along_g * vg, expected, rtol=1e-12, atol=1e-12)


def test_non_finite_probe_loss_is_never_chosen():
    x, y = make_data()
    model = make_model()
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1, rho=0.3, rho_m=0.9)
    opt.step(mse_closure(opt, model, x, y))
    best = opt.scalars["alpha"]
    alphas = opt.alphas()
    best_call = 3 + alphas.index(best)
    model = make_model()
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1, rho=0.3, rho_m=0.9)
    opt.step(mse_closure(opt, model, x, y, poison={best_call: float("nan")}))
    assert opt.scalars["alpha"] != best
    assert math.isfinite(opt.scalars["alpha"])
    assert opt.counters == {"updates": 1, "skipped": 0, "probes": 1, "upper_edge_probes": 0, "lower_edge_probes": 0}
    assert math.isnan(opt.probe_history[-1].losses[alphas.index(best)])


def test_all_probe_losses_non_finite_keeps_alpha_and_probes_again():
    x, y = make_data()
    model = make_model()
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1, alpha=0.8)
    opt.step(mse_closure(opt, model, x, y, poison={n: float("nan") for n in range(3, 24)}))
    assert opt.scalars == {"epoch": None, "alpha": 0.8, "probe_pending": True, "upper_edge_streak": 0}
    assert opt.counters["probes"] == 0 and not opt.probe_history
    opt.step(mse_closure(opt, model, x, y))
    assert opt.scalars["probe_pending"] is False
    assert opt.counters["probes"] == 1 and len(opt.probe_history) == 1


def test_plain_closure_equals_helper_closure_and_probes_are_forward_only():
    results, grad_modes = [], []
    for helper in (True, False):
        model = make_model()
        x, y = make_data()
        opt = sam_plugins.create("xsam", model.parameters(), lr=0.1, momentum=0.9)
        inner = mse_closure(opt, model, x, y, helper=helper)

        def closure(inner=inner):
            grad_modes.append(torch.is_grad_enabled())
            return inner()

        for _ in range(2):
            opt.step(closure)
        results.append(flat(model))
    assert torch.equal(results[0], results[1])
    helper_modes = grad_modes[: len(grad_modes) // 2]
    assert helper_modes[:2] == [True, True] and not any(helper_modes[2:23])
    assert all(grad_modes[len(grad_modes) // 2:])


def test_parameters_without_gradients_are_untouched():
    torch.manual_seed(0)
    used, unused, frozen = nn.Linear(3, 2), nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(3))
    frozen.requires_grad_(False)
    opt = sam_plugins.create("xsam", [*used.parameters(), unused, frozen], lr=0.1, weight_decay=0.1)
    before = unused.detach().clone(), frozen.detach().clone()
    x = torch.randn(5, 3)

    def closure():
        loss = used(x).pow(2).mean()
        opt.backward(loss)
        return loss

    opt.step(closure)
    assert torch.equal(unused, before[0]) and torch.equal(frozen, before[1])
    assert unused.grad is None and frozen.grad is None


def test_sparse_gradients_are_refused():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = sam_plugins.create("sam", emb.parameters(), lr=0.1)

    def closure():
        loss = emb(torch.tensor([1, 2])).sum()
        opt.backward(loss)
        return loss

    with pytest.raises(RuntimeError, match="sparse"):
        opt.step(closure)


def test_step_without_closure_says_what_to_do():
    opt = sam_plugins.create("xsam", make_model().parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match=r"needs a closure.*opt\.step\(closure\)"):
        opt.step()


@pytest.mark.parametrize(("name", "kwargs", "pattern"), [
    ("sam", {"rho": 0.0}, r"rho=0\.0 is invalid; allowed: a float in \(0\.0, inf\)"),
    ("sam", {"rho": -1}, r"rho=-1 is invalid"),
    ("sam", {"steps": 0}, r"steps=0 is invalid; allowed: an int in \[1, inf\)"),
    ("sam", {"steps": 1.5}, r"steps=1\.5 is invalid"),
    ("xsam", {"rho_m": 0.0}, r"rho_m=0\.0 is invalid"),
    ("xsam", {"alpha_step": 0.0}, r"alpha_step=0\.0 is invalid"),
    ("wsam", {"gamma": 1.0}, r"gamma=1\.0 is invalid; allowed: a float in \[0\.0, 1\.0\)"),
    ("wsam", {"max_norm": -1.0}, r"max_norm=-1\.0 is invalid"),
    ("xsam", {"alpha_max": -2.0}, r"alpha_max=-2\.0 is invalid"),
    ("xsam", {"grad_scale": "norm"}, r"grad_scale='norm' is invalid; allowed: one of 'norm_k'"),
    ("xsam", {"probe": 1}, r"probe=1 is invalid; allowed: True or False"),
    ("fsam", {"lam": 1.0}, r"lam=1\.0 is invalid; allowed: a float in \[0\.0, 1\.0\)"),
    ("evsam", {"alpha": 3.0}, r"alpha=3\.0 is invalid; allowed: a float in \[0\.0, 2\.0\]"),
    ("sam", {"rho": float("nan")}, r"rho=nan is invalid"),
    ("sam", {"base": "adamm"}, r"unknown base optimizer 'adamm'; choose one of \['adadelta'"),
    ("xsm", {}, r"unknown sharpness-aware variant 'xsm'; choose one of \['asam', 'evsam'"),
])
def test_bad_hyperparameters_fail_before_any_state(name, kwargs, pattern):
    model = make_model()
    params = flat(model)
    with pytest.raises(ValueError, match=pattern):
        sam_plugins.create(name, model.parameters(), lr=0.1, **kwargs)
    assert torch.equal(flat(model), params)


def test_base_keyword_errors_name_the_hyperparameters():
    with pytest.raises(TypeError, match=r"SGD with \['betas', 'lr'\] failed.*'betas'.*hyperparameters of 'sam' are"):
        sam_plugins.create("sam", make_model().parameters(), base="sgd", lr=0.1, betas=(0.9, 0.99))


def test_every_variant_is_importable_by_class_and_name():
    for name in ALL:
        cls = sam_plugins.get(name)
        assert getattr(sam_plugins, cls.__name__) is cls
        assert "_" not in name


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.drop, self.fc2 = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.drop(self.bn(self.fc1(x)))))


@pytest.mark.parametrize("name", ["sam", "xsam", "evsam"])
def test_batchnorm_statistics_updated_once_per_update(name):
    torch.manual_seed(0)
    net = BNNet()
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    reference = BNNet()
    reference.load_state_dict(net.state_dict())
    reference.train()
    reference(x)
    opt = sam_plugins.create(name, net, lr=0.1, steps=2)
    opt.step(mse_closure(opt, net, x, y))
    assert net.bn.num_batches_tracked.item() == 1
    assert torch.equal(net.bn.running_mean, reference.bn.running_mean)
    assert torch.equal(net.bn.running_var, reference.bn.running_var)


@pytest.mark.parametrize("replay", [True, False])
def test_dropout_masks_are_replayed_and_rng_advances_once(replay):
    torch.manual_seed(0)
    net = BNNet()
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    masks = []
    net.drop.register_forward_hook(lambda m, inp, out: masks.append(out == 0))
    opt = sam_plugins.create("xsam", net, lr=0.1, steps=2, replay_rng=replay)
    torch.manual_seed(123)
    opt.step(mse_closure(opt, net, x, y))
    after_step = torch.get_rng_state()
    assert len(masks) == 3 + 21
    same = all(torch.equal(m, masks[0]) for m in masks)
    assert same is replay
    if replay:
        torch.manual_seed(123)
        net(x)
        assert torch.equal(torch.get_rng_state(), after_step)


@pytest.mark.parametrize(("name", "hyper"), [
    ("sam", {}), ("asam", {}), ("xsam", {"probe_every": 3, "steps": 2}), ("fsam", {}),
    ("evsam", {"eig_every": 3, "eig_warm_start": True}), ("evsam", {"eig_every": 2, "eig_warm_start": False}),
    ("gsam", {"alpha": 0.3}), ("lsamplus", {}), ("msam", {}), ("wsam", {})])
@pytest.mark.parametrize("base", ["sgd", "adamw"])
def test_resume_is_bit_identical(name, hyper, base, tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    base_kwargs = {"lr": 0.05, "momentum": 0.9} if base == "sgd" else {"lr": 0.01}

    def build():
        torch.manual_seed(1)
        net = BNNet()
        opt = sam_plugins.create(name, net, base=base, **base_kwargs, **hyper)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
        return net, opt, sched

    def train(net, opt, sched, updates):
        for t in updates:
            if t % 2 == 0:
                opt.begin_epoch()
            torch.manual_seed(1000 + t)
            opt.step(mse_closure(opt, net, x, y))
            sched.step()

    net, opt, sched = build()
    train(net, opt, sched, range(6))
    uninterrupted = net.state_dict()

    net, opt, sched = build()
    train(net, opt, sched, range(3))
    torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "ck.pt")
    net, opt, sched = build()
    checkpoint = torch.load(tmp_path / "ck.pt", weights_only=True)
    net.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["opt"])
    sched.load_state_dict(checkpoint["sched"])
    train(net, opt, sched, range(3, 6))
    for key, value in uninterrupted.items():
        assert torch.equal(net.state_dict()[key], value), key


def test_loading_another_variants_state_is_refused():
    model = make_model()
    sam = sam_plugins.create("sam", model.parameters(), lr=0.1)
    xsam = sam_plugins.create("xsam", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="expected a state dict of variant 'xsam', got 'sam'"):
        xsam.load_state_dict(sam.state_dict())


def test_param_groups_are_shared_with_the_base_and_schedulers_work():
    model = make_model()
    groups = [{"params": [model[0].weight, model[0].bias], "lr": 0.1},
              {"params": list(model[2].parameters()), "lr": 0.01, "weight_decay": 0.0}]
    opt = sam_plugins.create("xsam", groups, base="adamw", weight_decay=0.05)
    assert opt.param_groups is opt.base.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = make_data()
    opt.step(mse_closure(opt, model, x, y))
    sched.step()
    assert [g["lr"] for g in opt.base.param_groups] == [0.05, 0.005]
    assert opt.base.param_groups[0]["weight_decay"] == 0.05


@pytest.mark.parametrize(("name", "bad_call", "failed"), [
    ("evsam", 3, "Hessian power iteration 2 of 5"), ("evsam", 7, "pass 1 of 1 (the gradient at ϑ_1)"),
    ("fsam", 2, "pass 1 of 1 (the gradient at ϑ_1)"), ("xsam", 2, "pass 1 of 1 (the gradient at ϑ_1)")])
def test_skipped_first_update_stages_no_variant_state(name, bad_call, failed):
    """State computed before a failing pass (evsam's eigenvector, F-SAM's EMA) is not committed."""
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create(name, model.parameters(), lr=0.1)
    fresh = state_bytes(opt)
    opt.step(mse_closure(opt, model, x, y, poison={bad_call: float("nan")}))
    assert opt.last_skip == f"{failed} had a non-finite loss or gradient"
    assert (opt.counters["updates"], opt.counters["skipped"]) == (0, 1)
    opt.counters["skipped"] = 0
    assert state_bytes(opt) == fresh
    assert not getattr(opt, "probe_history", None)


def test_signatures_list_each_variants_own_hyperparameters():
    import inspect

    for name in ALL:
        cls = sam_plugins.get(name)
        signature = inspect.signature(cls)
        declared = {h.name: h.default for h in cls.hyperparameters}
        keywords = {k: p.default for k, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert {k: v for k, v in keywords.items() if k in declared} == declared
        assert set(keywords) - set(declared) == {"model", "grad_scaler", "distributed", "group_keys"}


@pytest.mark.parametrize("name", ["sam", "xsam", "wsam", "evsam"])
def test_first_pass_done_by_the_caller(name):
    """``step(closure, loss=...)``: the caller ran pass 0; the result equals a normal step."""
    results = []
    for external in (False, True):
        model = make_model()
        x, y = make_data()
        opt = sam_plugins.create(name, model.parameters(), lr=0.1, momentum=0.9)
        closure = mse_closure(opt, model, x, y)
        for _ in range(2):
            if external:
                opt.zero_grad()
                opt.step(closure, loss=closure())
            else:
                opt.step(closure)
        results.append(flat(model))
    assert torch.equal(results[0], results[1])


UPDATE_EVERY_TIME = {"xsam": {"probe_every": 1}, "evsam": {"eig_every": 1}}


class Chunked(nn.Module):
    """One weight vector stored as ``chunks`` parameter tensors: the same function and the same update
    values whatever the split, so only the number of tensors differs (value-dependent branches, such as
    skipping a zero coefficient, take the same path)."""

    def __init__(self, chunks):
        super().__init__()
        weight = torch.randn(24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.parts = nn.ParameterList(nn.Parameter(part.clone()) for part in weight.chunk(chunks))

    def forward(self, x):
        return torch.tanh(x * torch.cat(list(self.parts))).sum(1)


def _operations_per_two_updates(name, chunks, hyper, foreach=True):
    model = Chunked(chunks)
    generator = torch.Generator().manual_seed(1)
    x, y = (torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((5, 24), (5,)))
    opt = sam_plugins.create(name, model.parameters(), base="sgd", lr=0.1, momentum=0.9, foreach=foreach, **hyper)
    counter = DispatchCounter()

    def closure():
        counter.paused = True
        try:
            loss = ((model(x) - y) ** 2).mean()
            opt.backward(loss)
            return loss
        finally:
            counter.paused = False

    opt.step(closure)
    with counter:
        opt.step(closure)
        opt.step(closure)
    return counter.count


@pytest.mark.parametrize(("name", "hyper"), [(n, UPDATE_EVERY_TIME.get(n, {})) for n in ALL] +
                         [("xsam", {"steps": 2, "probe_every": 1}), ("sam", {"steps": 3})])
def test_update_dispatches_as_many_operations_for_any_number_of_parameters(name, hyper):
    """The optimizer side is fused (``torch._foreach_*``): its operations, each a kernel launch on a GPU, do
    not grow with the parameter tensors; XSAM probes and X-SAM refreshes its eigenvector in every update."""
    few, many = (_operations_per_two_updates(name, chunks, hyper) for chunks in (2, 8))
    assert few == many > 0


def test_operation_count_grows_with_a_per_parameter_loop():
    """The check above can fail: torch's for-loop SGD (foreach=False) as the base adds operations per tensor."""
    few, many = (_operations_per_two_updates("sam", chunks, {}, foreach=False) for chunks in (2, 8))
    assert many - few >= 2 * 6  # two updates, six more parameter tensors


def test_begin_epoch_with_the_epoch_under_way_changes_nothing():
    """A loop resuming mid-epoch calls begin_epoch again for that epoch: XSAM must not probe again."""
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1)
    opt.begin_epoch(1)
    opt.step(mse_closure(opt, model, x, y))
    saved = opt.state_dict()
    resumed = sam_plugins.create("xsam", make_model().parameters(), lr=0.1)
    resumed.load_state_dict(saved)
    resumed.begin_epoch(1)
    assert resumed.scalars == opt.scalars and not resumed.scalars["probe_pending"]
    resumed.begin_epoch(2)
    assert resumed.scalars["probe_pending"] and resumed.scalars["epoch"] == 2
    opt.begin_epoch()
    assert opt.scalars["probe_pending"] and opt.scalars["epoch"] == 1


@pytest.mark.parametrize(("saved", "loading"), [("sgd", "adamw"), ("adamw", "sgd"), ("sgd", "adam")])
def test_loading_the_state_of_another_base_is_refused_before_anything_changes(saved, loading):
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create("sam", model.parameters(), base=saved, lr=0.1)
    opt.step(mse_closure(opt, model, x, y))
    other = sam_plugins.create("sam", make_model().parameters(), base=loading, lr=0.1)
    fresh = state_bytes(other)
    with pytest.raises(ValueError, match=rf"saved with base optimizer torch\.optim\.\w+\.{type(opt.base).__name__}, "
                                         rf"this optimizer's base is torch\.optim\.\w+\.{type(other.base).__name__};"):
        other.load_state_dict(opt.state_dict())
    assert state_bytes(other) == fresh
