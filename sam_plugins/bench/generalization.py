"""``python -m sam_plugins.bench.generalization``: what each variant does to test accuracy on small real data.

Two tasks that install from the package registry and generate locally: MNIST-1D (the ``mnist1d`` package's own
generator; the MNIST-1D paper's small CNN) and scikit-learn's 8×8 digits (an MLP), each clean and with 40 %
symmetric label noise on the training and validation labels (the test labels stay clean). Momentum SGD with a
cosine schedule to zero, long enough that training accuracy has plateaued, is the base; every variant runs over it
at its declared (paper) defaults, k = 1 or the multi-step defaults, with ρ swept over {½, 1, 2} × its default (and
XSAM's ρ_m over {2, 6} × ρ). The configuration with the best mean validation accuracy is reported on the test
split; every seed shares the initial weights, the batch order and the noisy labels across optimizers.

Writes ``runs.csv`` (every run), ``probes.json`` (XSAM's probe curves), ``results.md`` (the tables) and two figures
under ``--out``; ``--readme`` fills README.md's ``generalization`` block from ``runs.csv`` and ``meta.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import sam_plugins

from . import readme as readme_block

NOISES = (0.0, 0.4)
RHO_SCALES = (0.5, 1.0, 2.0)
XSAM_RHO_M_RATIOS = (2.0, 6.0)
BASE = "sgd"
BLOCK = "generalization"


@dataclass(frozen=True)
class Task:
    name: str
    epochs: int
    batch: int
    lr: float
    weight_decay: float


TASKS = {"mnist1d": Task("mnist1d", epochs=100, batch=100, lr=0.1, weight_decay=5e-4),
         "digits": Task("digits", epochs=100, batch=64, lr=0.1, weight_decay=5e-4)}


@dataclass(frozen=True)
class Spec:
    """One training run."""

    task: str
    noise: float
    method: str
    config: str  # JSON of the variant's non-default hyperparameters
    seed: int
    epochs: int


def load_task(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train inputs and labels, test inputs and labels (float32, int64), generated locally."""
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())  # the package's default generator and seed: 4000 train, 1000 test
        x, y, xt, yt = data["x"], data["y"], data["x_test"], data["y_test"]
        return (torch.tensor(x, dtype=torch.float32).unsqueeze(1), torch.tensor(y, dtype=torch.int64),
                torch.tensor(xt, dtype=torch.float32).unsqueeze(1), torch.tensor(yt, dtype=torch.int64))
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, xt, y, yt = train_test_split(digits.data / 16.0, digits.target, test_size=0.3, stratify=digits.target,
                                    random_state=0)
    return (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64),
            torch.tensor(xt, dtype=torch.float32), torch.tensor(yt, dtype=torch.int64))


def build_model(task: str) -> nn.Module:
    if task == "mnist1d":  # the MNIST-1D paper's CNN: three strided convolutions of 25 channels, a linear head
        return nn.Sequential(nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(),
                             nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(125, 10))
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def noisy_split(y: torch.Tensor, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and validation indices (80/20) and the labels with a fraction ``noise`` moved to another class."""
    g = torch.Generator().manual_seed(10_000 + seed)
    order = torch.randperm(len(y), generator=g)
    cut = int(0.8 * len(y))
    flip = torch.rand(len(y), generator=g) < noise
    other = (y + torch.randint(1, 10, (len(y),), generator=g)) % 10
    return order[:cut], order[cut:], torch.where(flip, other, y)


def configs(method: str, scales: tuple[float, ...], ratios: tuple[float, ...],
            alpha_max: float | None = None) -> list[dict[str, float]]:
    """The swept hyperparameters of one method: ρ × scales (XSAM: and ρ_m = ratio × ρ, and ``alpha_max`` when
    given)."""
    if method == BASE:
        return [{}]
    rho = next(h.default for h in sam_plugins.get(method).hyperparameters if h.name == "rho")
    if method == "xsam":
        grid = {"alpha_max": alpha_max} if alpha_max is not None else {}
        return [{"rho": rho * s, "rho_m": rho * s * r, **grid} for s in scales for r in ratios]
    return [{"rho": rho * s} for s in scales]


_DATA: dict[str, tuple[torch.Tensor, ...]] = {}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) * 100


def train(spec: Spec) -> dict[str, Any]:
    """One run: returns its accuracies, time per epoch and (XSAM) its probes."""
    torch.set_num_threads(1)
    task = TASKS[spec.task]
    x, y, xt, yt = _DATA[spec.task]
    train_idx, val_idx, labels = noisy_split(y, spec.noise, spec.seed)
    torch.manual_seed(spec.seed)
    model = build_model(spec.task)
    hyper = json.loads(spec.config)
    common = dict(lr=task.lr, momentum=0.9, weight_decay=task.weight_decay)
    sam = None
    if spec.method == BASE:
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), **common)
    else:
        sam = sam_plugins.create(spec.method, model, base="sgd", **common, **hyper)
        optimizer = sam
    updates_per_epoch = math.ceil(len(train_idx) / task.batch)
    total = spec.epochs * updates_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    order = torch.Generator().manual_seed(spec.seed)
    loss_fn = nn.CrossEntropyLoss()
    seconds = 0.0
    for _ in range(spec.epochs):
        model.train()
        start = time.perf_counter()
        if sam is not None:
            sam.begin_epoch()
        permutation = train_idx[torch.randperm(len(train_idx), generator=order)]
        for i in range(updates_per_epoch):
            idx = permutation[i * task.batch:(i + 1) * task.batch]
            xb, yb = x[idx], labels[idx]

            def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
                loss = loss_fn(model(xb), yb)
                if sam is not None:
                    sam.backward(loss)
                else:
                    loss.backward()
                return loss

            optimizer.zero_grad()
            optimizer.step(closure)
            schedule.step()
        seconds += time.perf_counter() - start
    probes = [dict(update=p.update, alphas=list(p.alphas), losses=list(p.losses), alpha=p.alpha, psi=p.psi,
                   edge=p.edge) for p in getattr(sam, "probe_history", [])]
    return dict(task=spec.task, noise=spec.noise, method=spec.method, config=spec.config, seed=spec.seed,
                epochs=spec.epochs, test_acc=accuracy(model, xt, yt), val_acc=accuracy(model, x[val_idx],
                                                                                      labels[val_idx]),
                train_acc=accuracy(model, x[train_idx], labels[train_idx]),
                train_clean_acc=accuracy(model, x[train_idx], y[train_idx]), epoch_seconds=seconds / spec.epochs,
                skipped=int(sam.counters["skipped"]) if sam is not None else 0, probes=probes)


FIELDS = ["task", "noise", "method", "config", "seed", "epochs", "test_acc", "val_acc", "train_acc", "train_clean_acc",
          "epoch_seconds", "skipped", "alpha_mean", "edge_share"]


def _row(result: dict[str, Any]) -> dict[str, Any]:
    probes = result["probes"]
    row = {k: result[k] for k in FIELDS[:12]}
    row["alpha_mean"] = statistics.fmean(p["alpha"] for p in probes) if probes else ""
    row["edge_share"] = sum(p["edge"] != "" for p in probes) / len(probes) if probes else ""
    return row


def read_runs(path: Path) -> list[dict[str, Any]]:
    numeric = {"noise", "test_acc", "val_acc", "train_acc", "train_clean_acc", "epoch_seconds", "alpha_mean",
               "edge_share"}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in numeric:
            row[key] = float(row[key]) if row[key] != "" else None
        row["seed"], row["epochs"], row["skipped"] = int(row["seed"]), int(row["epochs"]), int(row["skipped"])
    return rows


def _mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else \
        f"{values[0]:.1f}"


def _paired(mine: dict[int, float], theirs: dict[int, float]) -> str:
    seeds = sorted(set(mine) & set(theirs))
    diffs = [mine[s] - theirs[s] for s in seeds]
    wins = sum(d > 0 for d in diffs)
    return f"{_mean_std(diffs).replace('-', '−')} ({wins}/{len(diffs)})"


def _describe(config: str) -> str:
    hyper = json.loads(config)
    symbols = {"rho": "ρ", "rho_m": "ρ_m", "alpha_max": "α_max"}
    return ", ".join(f"{symbols.get(k, k)} {v:g}" for k, v in hyper.items()) or "—"


def chosen(rows: list[dict[str, Any]], sweep_seeds: int | None = None
           ) -> dict[tuple[str, float, str], tuple[str, list[dict[str, Any]]]]:
    """Per task, noise and method: the configuration with the best mean validation accuracy over the sweep seeds
    (the seeds every configuration ran), and all its runs."""
    groups: dict[tuple[str, float, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["noise"], row["method"], row["config"]), []).append(row)
    best: dict[tuple[str, float, str], tuple[str, list[dict[str, Any]]]] = {}
    scores: dict[tuple[str, float, str], float] = {}
    for (task, noise, method, config), runs in groups.items():
        score = statistics.fmean(r["val_acc"] for r in runs if sweep_seeds is None or r["seed"] < sweep_seeds)
        key = (task, noise, method)
        if key not in best or score > scores[key]:
            best[key], scores[key] = (config, runs), score
    return best


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown tables (the README block): one per task and noise level, methods in registry order."""
    best = chosen(rows, meta["sweep_seeds"])
    lines = [f"Measured {meta['date']} on {meta['machine']}; {meta['versions']}.",
             f"Command: `{meta['command']}` ({len(rows)} runs, {meta['hours']:.2f} h).", "",
             f"Test accuracy (%) of the configuration with the best mean validation accuracy over seeds 0–"
             f"{meta['sweep_seeds'] - 1} (every configuration ran on those; the chosen ones then on the rest), mean ± "
             f"std over {meta['seeds']} seeds; Δ = paired per-seed difference in points (seeds where it is > 0); "
             "train = accuracy on the (noisy) training labels; time = seconds per epoch relative to the base; "
             "α* = XSAM's mean probed α and the share of probes at the grid's edge."]
    for task in meta["tasks"]:
        for noise in meta["noises"]:
            base_runs, sam_runs = (best.get((task, noise, method), (None, []))[1] for method in (BASE, "sam"))
            base = {r["seed"]: r["test_acc"] for r in base_runs}
            sam = {r["seed"]: r["test_acc"] for r in sam_runs}
            base_time = statistics.fmean(r["epoch_seconds"] for r in base_runs) if base_runs else math.nan
            lines += ["", f"**{task}, {noise:.0%} label noise** ({meta['epochs'][task]} epochs)", "",
                      "| method | chosen | test % | Δ vs sgd | Δ vs sam | train % | time | α* (edge) |",
                      "|---|---|---|---|---|---|---|---|"]
            for method in meta["methods"]:
                if (task, noise, method) not in best:
                    continue
                config, runs = best[(task, noise, method)]
                test = {r["seed"]: r["test_acc"] for r in runs}
                alpha = [r["alpha_mean"] for r in runs if r["alpha_mean"] is not None]
                edge = [r["edge_share"] for r in runs if r["edge_share"] is not None]
                lines.append(
                    f"| {method} | {_describe(config)} | {_mean_std(list(test.values()))} | "
                    f"{_paired(test, base) if base and method != BASE else '—'} | "
                    f"{_paired(test, sam) if sam and method != 'sam' else '—'} | "
                    f"{_mean_std([r['train_acc'] for r in runs])} | "
                    + (f"{statistics.fmean(r['epoch_seconds'] for r in runs) / base_time:.2f} | " if base else "— | ")
                    + (f"{statistics.fmean(alpha):.2f} ({statistics.fmean(edge):.0%})" if alpha else "—") + " |")
    return "\n".join(lines) + "\n"


def figures(rows: list[dict[str, Any]], probes: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    """accuracy.png: each chosen configuration's test accuracy per seed and its mean; xsam_probes.png: the loss along
    XSAM's arc against α at four points of training (seed 0 of the chosen configuration), like the paper's Fig. 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = chosen(rows, meta["sweep_seeds"])
    panels = [(t, n) for t in meta["tasks"] for n in meta["noises"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (task, noise) in zip(axes[0], panels, strict=True):
        methods = [m for m in meta["methods"] if (task, noise, m) in best]
        for i, method in enumerate(methods):
            values = [r["test_acc"] for r in best[(task, noise, method)][1]]
            ax.scatter([i] * len(values), values, s=10, alpha=0.6)
            ax.plot([i - 0.3, i + 0.3], [statistics.fmean(values)] * 2, color="black")
        ax.set_xticks(range(len(methods)), methods, rotation=60, fontsize=8)
        ax.set_title(f"{task}, {noise:.0%} noise", fontsize=9)
        ax.set_ylabel("test accuracy %")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, noise) in zip(axes[0], panels, strict=True):
        if (task, noise, "xsam") not in best:
            continue
        config = best[(task, noise, "xsam")][0]
        run = next((p for p in probes if (p["task"], p["noise"], p["config"], p["seed"]) ==
                    (task, noise, config, min(meta["seeds_list"]))), None)
        if run is None or not run["probes"]:
            continue
        history = run["probes"]
        for probe in [history[round(i * (len(history) - 1) / 3)] for i in range(4)]:
            ax.plot(probe["alphas"], probe["losses"], label=f"update {probe['update']} (α* {probe['alpha']:.1f})")
        ax.set_title(f"XSAM probes: {task}, {noise:.0%} noise", fontsize=9)
        ax.set_xlabel("α")
        ax.set_ylabel("loss along the arc")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "xsam_probes.png", dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sam_plugins.bench.generalization", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/generalization"))
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    p.add_argument("--methods", nargs="+", choices=[BASE, *sam_plugins.available()],
                   default=[BASE, *sam_plugins.available()])
    p.add_argument("--xsam-alpha-max", type=float, default=None, help="XSAM's α grid [0, a] (default: its own, 2)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (one torch thread each)")
    p.add_argument("--quick", action="store_true",
                   help="digits only, sgd/sam/xsam, 3 seeds (2 in the sweep), 2 epochs: checks the pipeline in seconds")
    p.add_argument("--readme", type=Path, help="fill this README's block from the results")
    p.add_argument("--block", default=BLOCK, help=f"the README block's name (default: {BLOCK})")
    p.add_argument("--render-only", action="store_true", help="re-render tables, figures and README from --out")
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[list[Spec], dict[str, Any]]:
    """The sweep: every configuration on the first ``sweep_seeds`` seeds (the rest follow for the chosen ones)."""
    if args.quick:
        tasks, methods, seeds, sweep_seeds, scales, ratios = ["digits"], [BASE, "sam", "xsam"], 3, 2, (1.0, 2.0), \
            (2.0,)
        epochs = {"digits": 2}
    else:
        tasks, methods, seeds, sweep_seeds, scales, ratios = args.tasks, args.methods, args.seeds, \
            min(2, args.seeds), RHO_SCALES, XSAM_RHO_M_RATIOS
        epochs = {t: TASKS[t].epochs for t in tasks}
    specs = [Spec(t, n, m, json.dumps(c, sort_keys=True), s, epochs[t]) for t in tasks for n in NOISES
             for m in methods for c in configs(m, scales, ratios, args.xsam_alpha_max) for s in range(sweep_seeds)]
    meta = dict(tasks=tasks, noises=list(NOISES), methods=methods, seeds=seeds, sweep_seeds=sweep_seeds,
                seeds_list=list(range(seeds)), epochs=epochs,
                command=" ".join(["python -m sam_plugins.bench.generalization", *sys.argv[1:]]))
    return specs, meta


def remaining(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[Spec]:
    """The chosen configurations (best mean validation accuracy over the sweep seeds) on the other seeds."""
    best = chosen(results)
    return [Spec(task, noise, method, config, seed, meta["epochs"][task])
            for (task, noise, method), (config, _) in best.items()
            for seed in range(meta["sweep_seeds"], meta["seeds"])]


def _cost(spec: Spec) -> float:
    """Rough relative cost, so the longest runs start first."""
    passes = {BASE: 1, "msam": 3, "msamplus": 3, "lsam": 3, "lsamplus": 3, "evsam": 3}.get(spec.method, 2)
    return passes * spec.epochs * (3 if spec.task == "mnist1d" else 1)


def run_all(specs: list[Spec], jobs: int, stage: str) -> list[dict[str, Any]]:
    for task in {s.task for s in specs} - set(_DATA):
        _DATA[task] = load_task(task)
    ordered = sorted(specs, key=_cost, reverse=True)
    results, start = [], time.perf_counter()
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        for done, result in enumerate(pool.imap_unordered(train, ordered), 1):
            results.append(result)
            elapsed = time.perf_counter() - start
            print(f"{stage} [{done}/{len(specs)}] {elapsed / 60:.1f} min  {result['task']} noise {result['noise']:.1f} "
                  f"{result['method']} {_describe(result['config'])} seed {result['seed']}: test "
                  f"{result['test_acc']:.1f}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.readme:
        readme_block.markers(args.readme, args.block)  # a missing block fails now, not after the run
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        specs, meta = plan(args)
        start = time.perf_counter()
        results = run_all(specs, args.jobs, "sweep")
        results += run_all(remaining(results, meta), args.jobs, "chosen")
        processes = f"{args.jobs} process{'es' if args.jobs > 1 else ''} of 1 torch thread"
        meta.update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), machine=readme_block.host(),
                    versions=f"python {platform.python_version()}, torch {torch.__version__}; {processes}",
                    hours=(time.perf_counter() - start) / 3600)
        with open(args.out / "runs.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(_row(r) for r in sorted(results, key=lambda r: (r["task"], r["noise"], r["method"],
                                                                              r["config"], r["seed"])))
        (args.out / "probes.json").write_text(json.dumps([{k: r[k] for k in ("task", "noise", "config", "seed",
                                                                               "probes")}
                                                          for r in results if r["probes"]]))
        (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    meta = json.loads((args.out / "meta.json").read_text())
    rows = read_runs(args.out / "runs.csv")
    text = render(rows, meta)
    (args.out / "results.md").write_text(text)
    if (args.out / "probes.json").exists():  # the committed results keep the figures, not the 8 MB of probes
        figures(rows, json.loads((args.out / "probes.json").read_text()), meta, args.out)
    if args.readme:
        readme_block.splice(args.readme, text, args.block)
    print(text)
    return text


if __name__ == "__main__":
    main()
