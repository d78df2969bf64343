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
    rho, rho_m, alpha_max, samples = 0.3, 0.9, 2.0, 21
    alphas = [alpha_max * i / (samples - 1) for i in range(samples)]
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
                          alpha_samples=samples, probe_every=probe_every)
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


@pytest.mark.parametrize("steps", [1, 2])
def test_wsam(steps):
    rho, beta = 0.2, 1.7
    theta, x, y = start()
    ref = Reference(theta, "sgd")
    _, grads = ascend(theta, x, y, rho, steps)
    ref.apply((1 - beta) * grads[0] + beta * grads[-1])
    got, _ = run_engine("wsam", "sgd", 1, rho=rho, steps=steps, beta=beta)
    torch.testing.assert_close(got[0], ref.point, **TOL)


def test_gsam_with_rho_following_lr():
    rho, rho_min, a = 0.3, 0.1, 0.5
    theta, x, y = start()
    _cls, kwargs = BASES["sgd"]
    ref = Reference(theta, "sgd")
    model = make_model()
    opt = sam_plugins.create("gsam", model.parameters(), base="sgd", **kwargs, rho=rho, rho_min=rho_min, alpha=a)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - 0.25 * t)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref.opt, lambda t: 1.0 - 0.25 * t)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    for t in range(3):
        rho_t = rho_min + (rho - rho_min) * (1.0 - 0.25 * t)
        _, (g0, g1) = ascend(ref.point, x, y, rho_t, 1)
        ref.apply(g1 - a * (g0 - (g0 @ g1) / (g1 @ g1) * g1))
        ref_sched.step()
        opt.step(closure)
        sched.step()
        assert opt.stats["rho"] == pytest.approx(rho_t)
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
