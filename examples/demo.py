"""The core demo: the paper's 2D test function (figure) and a small real-data comparison (table).

Run ``python -m examples.demo --out out/demo`` from the repository root. It needs the ``demo`` extra (matplotlib and
scikit-learn, whose bundled 8x8 digits are the real data: no download).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sam_plugins import available, create, update

from . import toy2d

TOY_RUNS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "SGD": (None, {}),
    "SAM": ("sam", {"rho": 6.0}),
    "XSAM": ("xsam", {"rho": 6.0, "rho_m": 18.0, "alpha_max": 4.0, "probe_every": 1}),
}


def toy_paths() -> dict[str, torch.Tensor]:
    """Trajectories from the paper's start point with its settings (lr 5, momentum 0.9, 400 steps)."""
    return {label: toy2d.trajectory(variant, **hyper) for label, (variant, hyper) in TOY_RUNS.items()}


def toy_lines(paths: dict[str, torch.Tensor]) -> list[str]:
    """Where each trajectory ends and the minimum it is nearest to (the demo:toy2d block of docs/results.md)."""
    return [f"  {label:5s} ends at ({points[-1][0]:7.2f}, {points[-1][1]:6.2f}): "
            f"{toy2d.nearest_minimum(points[-1])} minimum" for label, points in paths.items()]


def plot_toy(path: Path, paths: dict[str, torch.Tensor]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mu, sigma = torch.meshgrid(torch.linspace(-30, 35, 300, dtype=torch.float64),
                               torch.linspace(2, 45, 300, dtype=torch.float64), indexing="xy")
    surface = toy2d.loss2d(torch.stack([mu, sigma]))
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.contourf(mu.numpy(), sigma.numpy(), surface.numpy(), levels=40, cmap="viridis")
    for (label, points), color in zip(paths.items(), ("white", "orange", "red")):
        ax.plot(points[:, 0].numpy(), points[:, 1].numpy(), color=color, lw=1.5, label=label)
    ax.plot(*toy2d.START, "ko", label="start")
    ax.plot(*toy2d.SHARP_MINIMUM, "bx", ms=10, label="sharp minimum")
    ax.plot(*toy2d.FLAT_MINIMUM, "g+", ms=12, label="flat minimum")
    ax.set_xlabel("μ")
    ax.set_ylabel("σ")
    ax.set_title("XSAM paper App. D.1: 400 steps, lr 5, momentum 0.9, ρ 6, ρ_m 18")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def digits(seed: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's bundled 8x8 digits, standardized, split 80/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-3
    x = (x - mean) / std
    return x[:cut], y[:cut], x[cut:], y[cut:]


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))


def train_digits(variant: str | None, seed: int, epochs: int, batch: int = 64) -> dict[str, float]:
    """Train the small net on digits with SGD (``variant=None``) or a variant over SGD."""
    xtr, ytr, xte, yte = digits(seed)
    torch.manual_seed(seed)
    model = net()
    base = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    if variant is None:
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), **base)
    else:
        opt = create(variant, model, base="sgd", **base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    calls = 0
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        if variant is not None:
            opt.begin_epoch()
        for idx in torch.randperm(len(xtr)).split(batch):
            xb, yb = xtr[idx], ytr[idx]

            def compute_loss(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
                nonlocal calls
                calls += 1
                return criterion(model(xb), yb)

            update(opt, compute_loss)
        sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(xte).argmax(1) == yte).float().mean().item() * 100
        train_loss = criterion(model(xtr), ytr).item()
    updates = epochs * ((len(xtr) + batch - 1) // batch)
    return {"accuracy": accuracy, "train_loss": train_loss, "seconds": seconds, "passes": calls / updates}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=None, help="default: every registered variant")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    figure = args.out / "toy2d.png"
    paths = toy_paths()
    plot_toy(figure, paths)
    print(f"2D test function (XSAM paper App. D.1) -> {figure}")
    print("\n".join(toy_lines(paths)))

    variants = args.variants if args.variants is not None else available()
    print(f"\nDigits (scikit-learn, 1437 train / 360 test), MLP with BatchNorm and dropout, SGD base, "
          f"{args.epochs} epochs, mean over {args.seeds} seeds")
    print(f"{'optimizer':10s} {'test acc %':>10s} {'train loss':>10s} {'passes/upd':>10s} {'seconds':>8s}")
    rows = []
    for variant in [None, *variants]:
        runs = [train_digits(variant, seed, args.epochs) for seed in range(args.seeds)]
        mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        rows.append((variant or "sgd", mean))
        print(f"{variant or 'sgd':10s} {mean['accuracy']:10.2f} {mean['train_loss']:10.4f} "
              f"{mean['passes']:10.2f} {mean['seconds']:8.2f}", flush=True)
    table = args.out / "digits.md"
    lines = ["| optimizer | test acc % | train loss | passes/update | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {m['accuracy']:.2f} | {m['train_loss']:.4f} | {m['passes']:.2f} | {m['seconds']:.2f} |"
              for name, m in rows]
    table.write_text("\n".join(lines) + "\n")
    print(f"table -> {table}")


if __name__ == "__main__":
    main()
