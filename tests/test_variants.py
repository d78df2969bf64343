"""One or two updates of every variant against the papers' formulas computed independently (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from reference import ascend, flat, grad_at, hessian_at, loss_at, make_data, make_model, slerp, unit

import sam_plugins

BASES = {
    "sgd": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "betas": (0.9, 0.98), "weight_decay": 0.3}),
}
TOL = {"rtol": 1e-10, "atol": 1e-12}


class Reference:
    """The variant-independent half: the base optimizer over one flat vector."""

    def __init__(self, theta: torch.Tensor, base: str) -> None:
        cls, kwargs = BASES[base]
        self.theta = theta.clone().requires_grad_(True)
        self.opt = cls([self.theta], **kwargs)

    def apply(self, direction: torch.Tensor) -> None:
        self.theta.grad = direction.clone()
        self.opt.step()

    @property
    def point(self) -> torch.Tensor:
        return self.theta.detach().clone()


def run_engine(name: str, base: str, updates: int, **hyper) -> tuple[list[torch.Tensor], sam_plugins.SharpnessAware]:
    model = make_model()
    x, y = make_data()
    _cls, kwargs = BASES[base]
    opt = sam_plugins.create(name, model.parameters(), base=base, **kwargs, **hyper)
    points = []

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        opt.backward(loss)
        return loss

    for _ in range(updates):
        opt.step(closure)
        points.append(flat(model))
    return points, opt


def start() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = make_data()
    return flat(make_model()), x, y


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_and_asam(base, steps, adaptive):
    rho, eta = 0.2, 0.05
    theta, x, y = start()
    ref = Reference(theta, base)
    expected = []
    for _ in range(2):
        _, grads = ascend(ref.point, x, y, rho, steps, adaptive=adaptive, eta=eta)
        ref.apply(grads[-1])
        expected.append(ref.point)
    name = "asam" if adaptive else "sam"
    got, _ = run_engine(name, base, 2, rho=rho, steps=steps, eta=eta)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOL)


def xsam_direction(theta, x, y, rho, rho_m, steps, alphas, alpha=None, adaptive=False):
    """Algorithm 1 of the XSAM paper: returns (direction, α*, probe losses)."""
    points, grads = ascend(theta, x, y, rho, steps, adaptive=adaptive)
    v0, v1 = unit(points[-1] - points[0]), unit(grads[-1])
    losses = [float(loss_at(theta + rho_m * slerp(v0, v1, a), x, y)) for a in alphas]
    if alpha is None:
        alpha = alphas[max(range(len(alphas)), key=lambda i: (losses[i], -i))]
    return torch.linalg.vector_norm(grads[-1]) * slerp(v0, v1, alpha), alpha, losses


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("probe_every", [0, 1])
def test_xsam(base, steps, probe_every):
    rho, rho_m, alpha_max, step = 0.3, 0.9, 2.0, 0.1
    alphas = [i * step for i in range(21)]
    theta, x, y = start()
    ref = Reference(theta, base)
    expected, chosen = [], []
    alpha = None
    for update in range(3):
        probing = update == 0 or probe_every == 1
        d, a, _ = xsam_direction(ref.point, x, y, rho, rho_m, steps, alphas, alpha=None if probing else alpha)
        alpha = a
        chosen.append(a)
        ref.apply(d)
        expected.append(ref.point)
    got, opt = run_engine("xsam", base, 3, rho=rho, rho_m=rho_m, steps=steps, alpha_max=alpha_max,
                          alpha_step=step, probe_every=probe_every)
    assert opt.scalars["alpha"] == pytest.approx(chosen[-1])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOL)


def test_xsam_probe_picks_interior_argmax():
    """The chosen α is the argmax of the independently computed probe losses, and not an end point."""
    rho, rho_m = 0.3, 0.9
    alphas = [i / 10 for i in range(21)]
    theta, x, y = start()
    _, alpha, losses = xsam_direction(theta, x, y, rho, rho_m, 1, alphas)
    _, opt = run_engine("xsam", "sgd", 1, rho=rho, rho_m=rho_m)
    assert opt.scalars["alpha"] == pytest.approx(alpha)
    assert opt.stats["alpha"] == pytest.approx(alpha)
    assert losses.index(max(losses)) == alphas.index(alpha)


@pytest.mark.parametrize("alpha", [-0.5, 0.0, 0.7, 1.0, 1.6])
def test_xsam_fixed_alpha(alpha):
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    d, _, _ = xsam_direction(theta, x, y, 0.2, 0.5, 1, [alpha], alpha=alpha)
    ref.apply(d)
    got, _ = run_engine("xsam", "sgd", 1, rho=0.2, rho_m=0.5, probe=False, alpha=alpha)
    torch.testing.assert_close(got[0], ref.point, **TOL)


def test_xsam_alpha_one_is_sam():
    got_x, _ = run_engine("xsam", "sgd", 2, rho=0.2, probe=False, alpha=1.0)
    got_s, _ = run_engine("sam", "sgd", 2, rho=0.2)
    for a, b in zip(got_x, got_s):
        torch.testing.assert_close(a, b, **TOL)


def test_xsam_adaptive():
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    alphas = [i / 10 for i in range(21)]
    d, _, _ = xsam_direction(theta, x, y, 0.5, 0.9, 2, alphas, adaptive=True)
    ref.apply(d)
    got, _ = run_engine("xsam", "sgd", 1, rho=0.5, rho_m=0.9, steps=2, adaptive=True)
    torch.testing.assert_close(got[0], ref.point, **TOL)


@pytest.mark.parametrize("scale", ["norm_k", "norm_0", "mean_norm", "max_norm", "slope_k", "slope_m"])
def test_xsam_grad_scales(scale):
    rho, rho_m, steps = 0.3, 0.9, 2
    alphas = [i / 10 for i in range(21)]
    theta, x, y = start()
    points, grads = ascend(theta, x, y, rho, steps)
    d, _alpha, losses = xsam_direction(theta, x, y, rho, rho_m, steps, alphas)
    direction = d / torch.linalg.vector_norm(grads[-1])
    norms = [float(torch.linalg.vector_norm(g)) for g in grads]
    loss0 = float(loss_at(theta, x, y))
    value = {
        "norm_k": norms[-1], "norm_0": norms[0], "mean_norm": sum(norms) / len(norms), "max_norm": max(norms),
        "slope_k": (float(loss_at(points[-1], x, y)) - loss0) / float(torch.linalg.vector_norm(points[-1] - theta)),
        "slope_m": (max(losses) - loss0) / rho_m,
    }[scale]
    ref = Reference(theta, "sgd")
    ref.apply(value * direction)
    got, _ = run_engine("xsam", "sgd", 1, rho=rho, rho_m=rho_m, steps=steps, grad_scale=scale)
    torch.testing.assert_close(got[0], ref.point, **TOL)


@pytest.mark.parametrize("adaptive", [False, True])
def test_fsam(adaptive):
    rho, sigma, lam = 0.2, 0.8, 0.6
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    ema, expected = None, []
    for _ in range(3):
        g = grad_at(ref.point, x, y)
        first = g if ema is None else g - sigma * ema
        _, grads = ascend(ref.point, x, y, rho, 1, adaptive=adaptive, first_direction=first)
        ema = g.clone() if ema is None else lam * ema + (1 - lam) * g
        ref.apply(grads[-1])
        expected.append(ref.point)
    got, opt = run_engine("fsam", "sgd", 3, rho=rho, sigma=sigma, lam=lam, adaptive=adaptive)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOL)
    ema_engine = torch.cat([opt.state[p]["ema"].reshape(-1) for g in opt.param_groups for p in g["params"]])
    torch.testing.assert_close(ema_engine, ema, **TOL)


@pytest.mark.parametrize(("name", "first", "normalize"), [
    ("msam", 1, False), ("msamplus", 0, False), ("lsam", 1, True), ("lsamplus", 0, True)])
@pytest.mark.parametrize("steps", [1, 3])
def test_multistep_sums(name, first, normalize, steps):
    rho = 0.3
    theta, x, y = start()
    ref = Reference(theta, "adamw")
    expected = []
    for _ in range(2):
        _, grads = ascend(ref.point, x, y, rho, steps)
        total = sum((unit(g) if normalize else g) for g in grads[first:])
        ref.apply(total * torch.linalg.vector_norm(grads[-1]) / torch.linalg.vector_norm(total))
        expected.append(ref.point)
    got, _ = run_engine(name, "adamw", 2, rho=rho, steps=steps)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOL)


def clipped(g: torch.Tensor, max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ on one vector, as WSAM's official code clips g_0 and g_k."""
    return g * min(1.0, max_norm / (float(torch.linalg.vector_norm(g)) + 1e-6)) if max_norm > 0 else g


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("decouple", [True, False])
@pytest.mark.parametrize("max_norm", [0.0, 0.05])
@pytest.mark.parametrize("steps", [1, 2])
def test_wsam(base, decouple, max_norm, steps):
    """The official WSAM: weight w = γ/(1−γ); coupled w·g_k + (1−w)·g_0 through the base, or decoupled: the
    base steps with g_0 and θ then moves by −lr·w·(g_k − g_0); max_norm clips g_0 and g_k each."""
    rho, gamma = 0.2, 0.8
    weight = gamma / (1 - gamma)
    lr = BASES[base][1]["lr"]
    theta, x, y = start()
    ref = Reference(theta, base)
    expected = []
    for _ in range(2):
        _, grads = ascend(ref.point, x, y, rho, steps)
        g0, gk = clipped(grads[0], max_norm), clipped(grads[-1], max_norm)
        if decouple:
            ref.apply(g0)
            with torch.no_grad():
                ref.theta.add_(gk - g0, alpha=-lr * weight)
        else:
            ref.apply(weight * gk + (1 - weight) * g0)
        expected.append(ref.point)
    if max_norm:
        assert float(torch.linalg.vector_norm(grads[0])) > max_norm  # clipping is exercised
    got, _ = run_engine("wsam", base, 2, rho=rho, steps=steps, gamma=gamma, decouple=decouple, max_norm=max_norm)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOL)


def test_wsam_gamma_one_half_is_sam():
    got_w, _ = run_engine("wsam", "adamw", 2, rho=0.2, gamma=0.5, decouple=False)
    got_s, _ = run_engine("sam", "adamw", 2, rho=0.2)
    for a, b in zip(got_w, got_s):
        torch.testing.assert_close(a, b, **TOL)


def gsam_direction(g0: torch.Tensor, g1: torch.Tensor, a: float) -> torch.Tensor:
    return g1 - a * (g0 - (g0 @ g1) / (g1 @ g1) * g1)


def test_gsam_keeps_rho_constant_under_a_decaying_lr():
    """As in the official PyTorch example, ρ does not follow the lr unless a ρ schedule says so."""
    rho, a = 0.3, 0.5
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref.opt, lambda t: 1.0 - 0.25 * t)
    model = make_model()
    opt = sam_plugins.create("gsam", model.parameters(), base="sgd", **BASES["sgd"][1], rho=rho, alpha=a)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - 0.25 * t)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        _, (g0, g1) = ascend(ref.point, x, y, rho, 1)
        ref.apply(gsam_direction(g0, g1, a))
        ref_sched.step()
        opt.step(closure)
        sched.step()
        assert opt.stats["rho"] == rho
        torch.testing.assert_close(flat(model), ref.point, **TOL)


def test_gsam_with_rho_following_lr():
    """GSAM's ProportionScheduler rule: (ρ − ρ_min)/(ρ_max − ρ_min) = (lr − lr_min)/(lr_max − lr_min)."""
    rho, rho_min, a = 0.3, 0.1, 0.5
    theta, x, y = start()
    _cls, kwargs = BASES["sgd"]
    ref = Reference(theta, "sgd")
    model = make_model()
    opt = sam_plugins.create("gsam", model.parameters(), base="sgd", **kwargs, rho=rho, alpha=a)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - 0.25 * t)
    rho_sched = sam_plugins.RhoFollowsLR(opt, rho_min=rho_min)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref.opt, lambda t: 1.0 - 0.25 * t)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    for t in range(3):
        rho_t = rho_min + (rho - rho_min) * (1.0 - 0.25 * t)
        _, (g0, g1) = ascend(ref.point, x, y, rho_t, 1)
        ref.apply(gsam_direction(g0, g1, a))
        ref_sched.step()
        opt.step(closure)
        sched.step()
        rho_sched.step()
        assert opt.stats["rho"] == pytest.approx(rho_t, rel=1e-12)
        torch.testing.assert_close(flat(model), ref.point, **TOL)


@pytest.mark.parametrize("warm", [True, False])
def test_evsam_against_exact_hessian(warm):
    rho, alpha, iters, every, seed = 0.2, 0.3, 4, 2, 5
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    vec, refreshes, expected = None, 0, []
    for update in range(3):
        point = ref.point
        if update % every == 0:
            if vec is None or not warm:
                gen = torch.Generator().manual_seed(seed + refreshes)
                parts = [torch.randn(p.shape, generator=gen, dtype=torch.float32).double()
                         for p in make_model().parameters()]
                vec = unit(torch.cat([q.reshape(-1) for q in parts]))
            hess = hessian_at(point, x, y)
            for _ in range(iters):
                vec = unit(hess @ vec)
            refreshes += 1
        _, (_g0, g1) = ascend(point, x, y, rho, 1)
        ghat = unit(g1)
        ref.apply(ghat - alpha * math.copysign(1.0, float(g1 @ vec)) * float(ghat @ vec) * vec)
        expected.append(ref.point)
    got, opt = run_engine("evsam", "sgd", 3, rho=rho, alpha=alpha, eig_iters=iters, eig_every=every,
                          eig_warm_start=warm, eig_eps=1e-7, seed=seed)
    assert opt.scalars["eig_refreshes"] == 2
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


def test_evsam_power_iteration_finds_top_eigenvector():
    theta, x, y = start()
    _, opt = run_engine("evsam", "sgd", 1, eig_iters=200, eig_eps=1e-7)
    hess = hessian_at(theta, x, y)
    values, vectors = torch.linalg.eigh(hess)
    top = vectors[:, values.abs().argmax()]
    found = torch.cat([opt.state[p]["eigvec"].reshape(-1) for g in opt.param_groups for p in g["params"]])
    assert abs(float(found @ top)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("alpha_max", "step"), [(2.0, 0.1), (4.0, 0.1), (1.0, 0.25), (0.35, 0.1)])
def test_xsam_grid_is_the_official_arange(alpha_max, step):
    """The official grid is numpy.arange(0, alpha_max + 1e-5, alpha_delta): alpha_max=4 keeps the 0.1 spacing."""
    import numpy as np

    opt = sam_plugins.create("xsam", make_model().parameters(), lr=0.1, alpha_max=alpha_max, alpha_step=step)
    assert opt.alphas() == np.arange(0.0, alpha_max + 1e-5, step).tolist()


def test_xsam_probe_history_records_each_probe():
    rho, rho_m = 0.3, 0.9
    alphas = [i * 0.1 for i in range(21)]
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    expected = []
    for _ in range(3):
        points, grads = ascend(ref.point, x, y, rho, 1)
        psi = math.acos(float(unit(points[-1] - points[0]) @ unit(grads[-1])))
        d, alpha, losses = xsam_direction(ref.point, x, y, rho, rho_m, 1, alphas)
        expected.append((alpha, losses, psi))
        ref.apply(d)
    _, opt = run_engine("xsam", "sgd", 3, rho=rho, rho_m=rho_m, probe_every=1, probe_history=2)
    assert len(opt.probe_history) == 2
    for probe, (alpha, losses, psi), update in zip(opt.probe_history, expected[1:], (1, 2)):
        assert probe.update == update
        assert probe.alphas == tuple(alphas)
        assert probe.alpha == pytest.approx(alpha)
        assert probe.losses == pytest.approx(losses, rel=1e-10)
        assert probe.psi == pytest.approx(psi, rel=1e-8)
        assert probe.edge == ("upper" if alpha == alphas[-1] else "lower" if alpha == 0 else "")
    assert opt.counters["probes"] == 3


def test_xsam_warns_once_when_alpha_sits_at_the_upper_edge():
    """With the grid ending below the in-plane maximum, α* is the grid's last point on every probe."""
    _, opt = run_engine("xsam", "sgd", 2, rho=0.3, rho_m=0.9, alpha_max=0.3, probe_every=1)
    assert [p.edge for p in opt.probe_history] == ["upper", "upper"]
    assert opt.stats["upper_edge"] == 1.0
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create("xsam", model.parameters(), lr=0.1, rho=0.3, rho_m=0.9, alpha_max=0.3, probe_every=1)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        opt.backward(loss)
        return loss

    opt.step(closure)
    opt.step(closure)
    with pytest.warns(RuntimeWarning, match=r"upper edge of the probe grid \(alpha_max=0\.3\) on the last 3 probes "
                                            r"\(3 of 3 so far\)") as caught:
        opt.step(closure)
    assert caught[0].filename == __file__
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(closure)
    assert opt.counters["upper_edge_probes"] == 4 and opt.scalars["upper_edge_streak"] == 4
    _, inside = run_engine("xsam", "sgd", 2, rho=0.3, rho_m=0.9, probe_every=1)
    assert inside.scalars["upper_edge_streak"] == 0 and inside.counters["upper_edge_probes"] == 0
