"""``python -m benchmarks.generalization``: what each variant does to test accuracy on small real data, under one
protocol for every method.

Two tasks that install from the package registry and generate locally: MNIST-1D (the ``mnist1d`` package's own
generator; the MNIST-1D paper's small CNN) and scikit-learn's 8×8 digits (an MLP), each clean and with 40 %
symmetric label noise on the training and validation labels (the test labels stay clean). Momentum SGD with a
cosine schedule to zero is the base.

- One grid of 6 configurations for every method: ρ ∈ RHO_GRID for every non-adaptive variant (XSAM: ρ_m = 2ρ),
  ρ ∈ ADAPTIVE_RHO_GRID for ASAM, lr × weight decay (BASE_GRID) for the base and for the base trained twice as
  long (``sgd-2x``, compute-matched to the two-pass variants).
- Every run is scored at its last epoch and at its epoch of best validation accuracy (early stopping on the
  validation split, never the test split). Per method and column, the configuration with the best mean validation
  accuracy over the sweep seeds is chosen (ties: the earlier one in grid order, i.e. the smaller ρ, lr, weight
  decay) and then runs on the remaining seeds.
- The XSAM paper's protocol as its own table: SGD, its two-pass "SGD" (XSAM at a fixed α = 0), SAM, WSAM, XSAM at a
  fixed α (probing off; α = the mean α* XSAM probed at that ρ, the paper's WSAM-like ablation) and XSAM at equal ρ,
  paired per seed over ``--paired-seeds`` seeds.

Runs are appended to ``runs.csv`` as they finish; a re-run skips the runs already there, so the benchmark can be
completed in several sittings. ``configurations.md`` lists every configuration, ``sensitivity.png`` (drawn from
``sensitivity.json``) test accuracy against ρ; ``--readme docs/generalization.md`` fills that page's
``generalization`` block.
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import sam_plugins

from . import blocks

NOISES = (0.0, 0.4)
BASE = "sgd"
BASE_2X = "sgd-2x"  # the base at twice the epochs: as many gradient evaluations as a two-pass variant
TWO_PASS_SGD = "sgd-2pass"  # the XSAM paper's "SGD": XSAM's two passes with the fixed α = 0
FIXED_ALPHA = "xsam-fixed"  # XSAM with probing off at a fixed α (the paper's WSAM-like ablation)
RHO_GRID = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
ADAPTIVE_RHO_GRID = tuple(10 * rho for rho in RHO_GRID)  # ASAM's ρ scales |w|-normalised steps (its default: 0.5)
BASE_GRID = tuple({"lr": lr, "weight_decay": wd} for lr in (0.05, 0.1, 0.2) for wd in (5e-4, 5e-3))
XSAM_RHO_M_RATIO = 2.0
EQUAL_RHO = (0.05, 0.1, 0.2)  # the XSAM paper's radii for its equal-ρ comparison run from 0.05 to 0.3
COLLAPSED = 20.0  # a run ending below this test accuracy (%) has collapsed (chance: 10 %)
COLUMNS = ("final", "early")  # scored at the last epoch, at the epoch of best validation accuracy
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
    config: str  # JSON of the hyperparameters that differ from the task's base setting
    seed: int
    epochs: int

    @property
    def key(self) -> tuple[str, float, str, str, int, int]:
        return self.task, self.noise, self.method, self.config, self.seed, self.epochs


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


def grid(method: str, rhos: Iterable[float] = RHO_GRID) -> list[dict[str, Any]]:
    """A method's configurations, in grid order (the tie-break order)."""
    if method in (BASE, BASE_2X):
        return [dict(c) for c in BASE_GRID]
    if _default(method, "adaptive"):
        rhos = [10 * rho for rho in rhos]
    if method == "xsam":
        return [{"rho": rho, "rho_m": XSAM_RHO_M_RATIO * rho} for rho in rhos]
    return [{"rho": rho} for rho in rhos]


def _default(method: str, name: str) -> Any:
    return next((h.default for h in sam_plugins.get(method).hyperparameters if h.name == name), None)


def as_config(hyper: dict[str, Any]) -> str:
    return json.dumps(hyper, sort_keys=True)


_DATA: dict[str, tuple[torch.Tensor, ...]] = {}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) * 100


def build_optimizer(spec: Spec, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """The run's optimizer and, for a sharpness-aware one, itself again (None for the base)."""
    task = TASKS[spec.task]
    hyper = json.loads(spec.config)
    common = dict(lr=task.lr, momentum=0.9, weight_decay=task.weight_decay)
    if spec.method in (BASE, BASE_2X):
        return torch.optim.SGD(model.parameters(), **{**common, **hyper}), None
    name = "xsam" if spec.method in (TWO_PASS_SGD, FIXED_ALPHA) else spec.method
    sam = sam_plugins.create(name, model, base="sgd", **common, **hyper)
    return sam, sam


def train(spec: Spec) -> dict[str, Any]:
    """One run: its accuracies at the last epoch and at the epoch of best validation accuracy, time per epoch and
    (XSAM) its mean probed α and share of probes at the grid's edge."""
    torch.set_num_threads(1)
    task = TASKS[spec.task]
    x, y, xt, yt = _DATA[spec.task]
    train_idx, val_idx, labels = noisy_split(y, spec.noise, spec.seed)
    torch.manual_seed(spec.seed)
    model = build_model(spec.task)
    optimizer, sam = build_optimizer(spec, model)
    updates_per_epoch = math.ceil(len(train_idx) / task.batch)
    total = spec.epochs * updates_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    order = torch.Generator().manual_seed(spec.seed)
    loss_fn = nn.CrossEntropyLoss()
    seconds, best = 0.0, (-1.0, 0.0, 0)  # (validation accuracy, test accuracy, epoch) of the best epoch so far
    for epoch in range(spec.epochs):
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
        val = accuracy(model, x[val_idx], labels[val_idx])
        if val > best[0]:  # ties keep the earlier epoch
            best = (val, accuracy(model, xt, yt), epoch + 1)
    probes = list(getattr(sam, "probe_history", []))
    return dict(task=spec.task, noise=spec.noise, method=spec.method, config=spec.config, seed=spec.seed,
                epochs=spec.epochs, test_acc=accuracy(model, xt, yt), val_acc=accuracy(model, x[val_idx],
                                                                                      labels[val_idx]),
                es_test_acc=best[1], es_val_acc=best[0], es_epoch=best[2],
                train_acc=accuracy(model, x[train_idx], labels[train_idx]),
                train_clean_acc=accuracy(model, x[train_idx], y[train_idx]), epoch_seconds=seconds / spec.epochs,
                skipped=int(sam.counters["skipped"]) if sam is not None else 0,
                alpha_mean=statistics.fmean(p.alpha for p in probes) if probes else "",
                edge_share=sum(p.edge != "" for p in probes) / len(probes) if probes else "")


FIELDS = ["task", "noise", "method", "config", "seed", "epochs", "test_acc", "val_acc", "es_test_acc", "es_val_acc",
          "es_epoch", "train_acc", "train_clean_acc", "epoch_seconds", "skipped", "alpha_mean", "edge_share"]
_INTEGERS = {"seed", "epochs", "es_epoch", "skipped"}


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in FIELDS:
            if key in _INTEGERS:
                row[key] = int(row[key])
            elif key not in ("task", "method", "config"):
                row[key] = float(row[key]) if row[key] != "" else None
    return rows


def _key(row: dict[str, Any]) -> tuple[str, float, str, str, int, int]:
    return row["task"], row["noise"], row["method"], row["config"], row["seed"], row["epochs"]


def _score(row: dict[str, Any], column: str, kind: str) -> float:
    """The run's validation (``kind`` "val") or test accuracy in a column."""
    return row[f"{'es_' if column == 'early' else ''}{kind}_acc"]


# ----------------------------------------------------------------------------------------------- the plan
def sweep_plan(meta: dict[str, Any]) -> list[Spec]:
    """Every configuration of every grid method on the sweep seeds."""
    return [Spec(task, noise, method, as_config(config), seed, _epochs(meta, task, method))
            for task in meta["tasks"] for noise in meta["noises"] for method in meta["methods"]
            for config in grid(method, meta["rho_grid"]) for seed in range(meta["sweep_seeds"])]


def _epochs(meta: dict[str, Any], task: str, method: str) -> int:
    return meta["epochs"][task] * (2 if method == BASE_2X else 1)


def chosen(rows: list[dict[str, Any]], meta: dict[str, Any], column: str) -> dict[tuple[str, float, str], str]:
    """Per task, noise and grid method: the configuration with the best mean validation accuracy over the sweep
    seeds in ``column``; ties go to the earlier configuration in grid order. Independent of the rows' order."""
    runs: dict[tuple[str, float, str, str], list[float]] = {}
    for row in rows:
        if row["method"] in meta["methods"] and row["seed"] < meta["sweep_seeds"]:
            runs.setdefault((row["task"], row["noise"], row["method"], row["config"]), []).append(
                _score(row, column, "val"))
    best: dict[tuple[str, float, str], str] = {}
    for task in meta["tasks"]:
        for noise in meta["noises"]:
            for method in meta["methods"]:
                scored = [(statistics.fmean(runs[key]), -i, config)
                          for i, config in enumerate(as_config(c) for c in grid(method, meta["rho_grid"]))
                          if (key := (task, noise, method, config)) in runs
                          and len(runs[key]) == meta["sweep_seeds"]]
                if scored:
                    best[(task, noise, method)] = max(scored)[2]
    return best


def chosen_plan(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[Spec]:
    """The configurations chosen in either column, on the remaining seeds."""
    configs = {(task, noise, method, config) for column in COLUMNS
               for (task, noise, method), config in chosen(rows, meta, column).items()}
    return [Spec(task, noise, method, config, seed, _epochs(meta, task, method))
            for task, noise, method, config in sorted(configs) for seed in range(meta["sweep_seeds"], meta["seeds"])]


def protocol_configs(rows: list[dict[str, Any]], meta: dict[str, Any], task: str, noise: float, rho: float
                     ) -> dict[str, dict[str, Any]] | None:
    """The equal-ρ comparison's configuration of each method at ρ (None until XSAM's sweep runs at ρ are in: its
    fixed-α ablation takes their mean probed α, to 0.25)."""
    alphas = [r["alpha_mean"] for r in rows if (r["task"], r["noise"], r["method"]) == (task, noise, "xsam")
              and json.loads(r["config"]).get("rho") == rho and r["seed"] < meta["sweep_seeds"]]
    if len(alphas) < meta["sweep_seeds"]:
        return None
    return {BASE: {"lr": TASKS[task].lr, "weight_decay": TASKS[task].weight_decay},
            TWO_PASS_SGD: {"rho": rho, "probe": False, "alpha": 0.0},
            "sam": {"rho": rho}, "wsam": {"rho": rho},
            FIXED_ALPHA: {"rho": rho, "probe": False, "alpha": round(4 * statistics.fmean(alphas)) / 4},
            "xsam": {"rho": rho, "rho_m": XSAM_RHO_M_RATIO * rho}}


def protocol_plan(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[Spec]:
    specs = []
    for task in meta["paired_tasks"]:
        for noise in meta["noises"]:
            for rho in meta["equal_rho"]:
                for method, config in (protocol_configs(rows, meta, task, noise, rho) or {}).items():
                    specs += [Spec(task, noise, method, as_config(config), seed, meta["epochs"][task])
                              for seed in range(meta["paired_seeds"])]
    return specs


# ----------------------------------------------------------------------------------------------- statistics
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086)  # Student's t, 97.5 % quantile, 1 … 20 degrees of freedom


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (Student's t; 1.96 beyond 20 degrees of freedom)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    t = _T975[len(values) - 2] if len(values) - 1 <= len(_T975) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def _mean_ci(values: list[float]) -> str:
    mean, half = interval(values)
    return f"{mean:.1f}" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def _paired(mine: dict[int, float], theirs: dict[int, float]) -> str:
    """Paired per-seed difference: mean [95 % CI] (seeds where it is > 0)."""
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return "—"
    diffs = [mine[s] - theirs[s] for s in seeds]
    mean, half = interval(diffs)
    ci = "" if math.isnan(half) else f" [{mean - half:+.1f}, {mean + half:+.1f}]"
    return f"{mean:+.1f}{ci} ({sum(d > 0 for d in diffs)}/{len(diffs)})".replace("-", "−")


def _describe(config: str) -> str:
    hyper = json.loads(config)
    symbols = {"rho": "ρ", "rho_m": "ρ_m", "alpha": "α", "lr": "lr", "weight_decay": "wd"}
    return ", ".join(f"{symbols.get(k, k)} {v:g}" for k, v in hyper.items() if k != "probe") or "—"


# ----------------------------------------------------------------------------------------------- rendering
class Runs:
    """The rows indexed once for rendering: each configuration's runs by seed, and each column's chosen
    configurations."""

    def __init__(self, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self.rows, self.meta = rows, meta
        self.by_config: dict[tuple[str, float, str, str], dict[int, dict]] = {}
        for r in rows:
            self.by_config.setdefault((r["task"], r["noise"], r["method"], r["config"]), {})[r["seed"]] = r
        self.picks = {column: chosen(rows, meta, column) for column in COLUMNS}

    def of(self, task: str, noise: float, method: str, config: str, seeds: int) -> dict[int, dict]:
        """The runs of one configuration on seeds 0 … seeds − 1 (the equal-ρ comparison runs some on more seeds)."""
        return {s: r for s, r in self.by_config.get((task, noise, method, config), {}).items() if s < seeds}


def _at_edge(method: str, config: str, meta: dict[str, Any]) -> bool:
    configs = [as_config(c) for c in grid(method, meta["rho_grid"])]
    return method not in (BASE, BASE_2X) and config in (configs[0], configs[-1])


def main_tables(runs_of: Runs) -> list[str]:
    rows, meta, picks = runs_of.rows, runs_of.meta, runs_of.picks
    lines = []
    for task in meta["tasks"]:
        for noise in meta["noises"]:
            lines += ["", f"**{task}, {noise:.0%} label noise** ({meta['epochs'][task]} epochs; "
                          f"{meta['seeds']} seeds)", "",
                      "| method | chosen (last epoch) | test % | chosen (early-stopped) | test % | Δ vs sgd | Δ vs sam "
                      "| collapsed |", "|---|---|---|---|---|---|---|---|"]
            reference = {}
            for method in (BASE, "sam"):
                config = picks["early"].get((task, noise, method))
                if config is not None:
                    reference[method] = {s: r["es_test_acc"] for s, r in
                                         runs_of.of(task, noise, method, config, meta["seeds"]).items()}
            for method in meta["methods"]:
                if (task, noise, method) not in picks["final"]:
                    continue
                cells = [method]
                for column in COLUMNS:
                    config = picks[column][(task, noise, method)]
                    runs = runs_of.of(task, noise, method, config, meta["seeds"])
                    edge = " (edge)" if _at_edge(method, config, meta) else ""
                    cells += [_describe(config) + edge, _mean_ci([_score(r, column, "test") for r in runs.values()])]
                early_runs = runs_of.of(task, noise, method, picks["early"][(task, noise, method)], meta["seeds"])
                early = {s: r["es_test_acc"] for s, r in early_runs.items()}
                cells += [_paired(early, reference[m]) if m in reference and m != method else "—"
                          for m in (BASE, "sam")]
                grid_runs = [r for r in rows if (r["task"], r["noise"], r["method"]) == (task, noise, method)
                             and r["seed"] < meta["sweep_seeds"]]
                cells.append(f"{sum(r['test_acc'] < COLLAPSED for r in grid_runs)} of {len(grid_runs)}")
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def headlines(runs_of: Runs) -> list[str]:
    """One sentence per task and noise level with the numbers a reader asks first, taken from the tables' data."""
    meta, picks = runs_of.meta, runs_of.picks
    lines = []
    for task in meta["tasks"]:
        for noise in meta["noises"]:
            scores: dict[str, dict[str, dict[int, float]]] = {}
            for method in (BASE, BASE_2X, "sam", "xsam"):
                if (task, noise, method) in picks["final"]:
                    scores[method] = {column: {s: _score(r, column, "test") for s, r in runs_of.of(
                        task, noise, method, picks[column][(task, noise, method)], meta["seeds"]).items()}
                        for column in COLUMNS}
            if not {BASE, "sam", "xsam"} <= set(scores):
                continue
            parts = [f"{m} {_mean_ci(list(scores[m]['early'].values()))} "
                     f"(last epoch {_mean_ci(list(scores[m]['final'].values()))})" for m in scores]
            lines.append(f"- {task}, {noise:.0%} label noise, early-stopped test %: " + "; ".join(parts)
                         + f". XSAM − tuned SGD {_paired(scores['xsam']['early'], scores[BASE]['early'])}, "
                         f"XSAM − SAM {_paired(scores['xsam']['early'], scores['sam']['early'])}.")
    return lines


def protocol_tables(runs_of: Runs) -> list[str]:
    rows, meta = runs_of.rows, runs_of.meta
    methods = (BASE, TWO_PASS_SGD, "sam", "wsam", FIXED_ALPHA, "xsam")
    lines = []
    for task in meta["paired_tasks"]:
        for noise in meta["noises"]:
            table = []
            for rho in meta["equal_rho"]:
                configs = protocol_configs(rows, meta, task, noise, rho)
                if configs is None:
                    continue
                tests = {m: {s: r["test_acc"] for s, r in
                             runs_of.of(task, noise, m, as_config(configs[m]), meta["paired_seeds"]).items()}
                         for m in methods}
                if any(len(t) < meta["paired_seeds"] for t in tests.values()):
                    continue
                table.append(f"| {rho:g} | " + " | ".join(_mean_ci(list(tests[m].values())) for m in methods)
                             + f" | {configs[FIXED_ALPHA]['alpha']:g} | {_paired(tests['xsam'], tests['sam'])} | "
                             f"{_paired(tests['xsam'], tests[FIXED_ALPHA])} |")
            if table:
                lines += ["", f"**{task}, {noise:.0%} label noise: equal ρ** (last epoch; {meta['paired_seeds']} "
                              "seeds)", "", "| ρ | " + " | ".join(methods) + " | fixed α | Δ xsam − sam | "
                              "Δ xsam − xsam-fixed |", "|---" * (len(methods) + 4) + "|", *table]
    return lines


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The generalization block: the tuned comparison, the equal-ρ comparison and the collapses, all from ``rows``."""
    lines = [f"Measured {meta['date']} on {meta['machine']}; {meta['versions']}.",
             f"Command: `{meta['command']}` ({len(rows)} runs, {meta['hours']:.2f} h of running).", "",
             f"Test accuracy (%), mean ± half-width of the 95 % confidence interval over {meta['seeds']} seeds, of the "
             f"configuration with the best mean validation accuracy over seeds 0–{meta['sweep_seeds'] - 1} "
             f"({len(meta['rho_grid'])} configurations per variant, {len(BASE_GRID)} for the base; ties: the smaller "
             "ρ / lr / weight decay), scored at the last epoch and at "
             "the epoch of best validation accuracy (early-stopped). Δ: paired per-seed difference of the "
             "early-stopped scores, mean [95 % CI] (seeds where it is > 0). (edge): the choice sits at an end of the "
             f"grid. collapsed: runs of the method's grid ending below {COLLAPSED:g} % test accuracy."]
    runs_of = Runs(rows, meta)
    lines += ["", *headlines(runs_of)]
    lines += main_tables(runs_of)
    lines += protocol_tables(runs_of)
    collapses = sorted({(r["task"], r["noise"], r["method"], r["config"]) for r in rows
                        if r["test_acc"] < COLLAPSED and r["task"] in meta["tasks"]})
    if collapses:
        lines += ["", "Collapsed configurations (at least one seed below "
                      f"{COLLAPSED:g} % at the last epoch): "
                  + "; ".join(f"{t} {n:.0%} {m} {_describe(c)}" for t, n, m, c in collapses) + "."]
    return "\n".join(lines) + "\n"


def configurations(rows: list[dict[str, Any]]) -> str:
    """Every configuration that ran: its seeds and mean accuracies (docs/generalization/configurations.md)."""
    groups: dict[tuple[str, float, str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["noise"], row["method"], row["config"], row["epochs"]), []).append(row)
    lines = ["| task | noise | method | configuration | epochs | seeds | val % | test % | early-stopped val % | "
             "early-stopped test % | collapsed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (task, noise, method, config, epochs), runs in sorted(groups.items()):
        means = [statistics.fmean(r[k] for r in runs) for k in ("val_acc", "test_acc", "es_val_acc", "es_test_acc")]
        lines.append(f"| {task} | {noise:.0%} | {method} | {_describe(config)} | {epochs} | {len(runs)} | "
                     + " | ".join(f"{m:.1f}" for m in means)
                     + f" | {sum(r['test_acc'] < COLLAPSED for r in runs)} |")
    return "\n".join(lines) + "\n"


def sensitivity(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The figure's data: per task and noise, each variant's last-epoch test accuracy per seed against ρ (ASAM's
    ρ / 10, on the same axis), and the base's chosen mean."""
    runs_of = Runs(rows, meta)
    data: dict[str, Any] = {}
    for task in meta["tasks"]:
        for noise in meta["noises"]:
            panel: dict[str, Any] = {}
            for method in meta["methods"]:
                if method in (BASE, BASE_2X):
                    continue
                scale = 10 if _default(method, "adaptive") else 1
                points = sorted((json.loads(r["config"])["rho"] / scale, r["seed"], r["test_acc"]) for r in rows
                                if (r["task"], r["noise"], r["method"]) == (task, noise, method)
                                and r["seed"] < meta["sweep_seeds"])
                if points:
                    panel[method] = points
            base = runs_of.picks["final"].get((task, noise, BASE))
            if base is not None:
                panel[BASE] = statistics.fmean(r["test_acc"] for r in
                                               runs_of.of(task, noise, BASE, base, meta["seeds"]).values())
            data[f"{task}, {noise:.0%} noise"] = panel
    return data


def figure(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(4.4 * len(data), 4.2), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    for ax, (title, panel) in zip(axes[0], data.items(), strict=True):
        rhos_seen: set[float] = set()
        for i, (method, points) in enumerate(panel.items()):
            if method == BASE:
                ax.axhline(points, color="black", linestyle="--", linewidth=1, label="sgd (tuned)")
                continue
            color = colors[2 * i % len(colors) + (2 * i // len(colors)) % 2]
            rhos = sorted({p[0] for p in points})
            rhos_seen.update(rhos)
            means = [statistics.fmean(a for r, _, a in points if r == rho) for rho in rhos]
            ax.plot(rhos, means, marker="o", markersize=3, linewidth=1, color=color, label=method)
            kept = [(r, a) for r, _, a in points if a >= COLLAPSED]
            fell = [(r, a) for r, _, a in points if a < COLLAPSED]
            ax.scatter([r for r, _ in kept], [a for _, a in kept], s=6, color=color, alpha=0.5)
            ax.scatter([r for r, _ in fell], [a for _, a in fell], s=30, marker="x", color=color)
        ax.set_xscale("log")
        ax.set_xticks(sorted(rhos_seen), [f"{r:g}" for r in sorted(rhos_seen)])
        ax.minorticks_off()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ρ (ASAM: ρ / 10)")
        ax.set_ylabel("test accuracy % (last epoch)")
    axes[0][0].legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- running
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.generalization", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/generalization"))
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    p.add_argument("--methods", nargs="+", choices=[BASE, BASE_2X, *sam_plugins.available()],
                   default=[BASE, BASE_2X, *sam_plugins.available()])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--paired-seeds", type=int, default=10, help="seeds of the equal-ρ comparison")
    p.add_argument("--paired-tasks", nargs="*", choices=sorted(TASKS), default=["digits"],
                   help="tasks of the equal-ρ comparison")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (one torch thread each)")
    p.add_argument("--quick", action="store_true",
                   help="digits, sgd/sam/wsam/xsam, 2 radii, 2 epochs, 3 seeds: checks the pipeline in seconds")
    p.add_argument("--readme", type=Path,
                   help="fill the generalization block of this Markdown file (docs/generalization.md) from the results")
    p.add_argument("--render-only", action="store_true", help="re-render the tables, docs and figure from --out")
    args = p.parse_args(argv)
    if args.quick and args.readme:
        p.error("--quick runs a 2-epoch pipeline check; its numbers never go into the docs (drop --readme)")
    return args


def plan_meta(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return dict(tasks=["digits"], noises=list(NOISES), methods=[BASE, "sam", "wsam", "xsam"], seeds=3,
                    sweep_seeds=2, paired_seeds=3, paired_tasks=["digits"], epochs={"digits": 2},
                    rho_grid=[0.05, 0.1], equal_rho=[0.1])
    return dict(tasks=args.tasks, noises=list(NOISES), methods=args.methods, seeds=args.seeds,
                sweep_seeds=min(2, args.seeds), paired_seeds=args.paired_seeds, paired_tasks=args.paired_tasks,
                epochs={t: TASKS[t].epochs for t in args.tasks}, rho_grid=list(RHO_GRID), equal_rho=list(EQUAL_RHO))


def _cost(spec: Spec) -> float:
    """Rough relative cost, so the longest runs start first."""
    passes = {BASE: 1, BASE_2X: 1, "msam": 3, "msamplus": 3, "lsam": 3, "lsamplus": 3, "evsam": 3}.get(spec.method, 2)
    return passes * spec.epochs * (7 if spec.task == "mnist1d" else 1)


def run(specs: list[Spec], done: set, jobs: int, csv_path: Path, stage: str) -> list[dict[str, Any]]:
    """Run the specs not yet in the CSV, appending each result as it finishes."""
    todo = sorted({s for s in specs if s.key not in done}, key=lambda s: (-_cost(s), s.key))
    if not todo:
        return []
    for task in {s.task for s in todo} - set(_DATA):
        _DATA[task] = load_task(task)
    results, start = [], time.perf_counter()
    new_file = not csv_path.exists()
    with open(csv_path, "a", newline="") as f, multiprocessing.get_context("fork").Pool(jobs) as pool:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for i, result in enumerate(pool.imap_unordered(train, todo), 1):
            writer.writerow(result)
            f.flush()
            results.append(result)
            done.add(_key(result))
            print(f"{stage} [{i}/{len(todo)}] {(time.perf_counter() - start) / 60:.1f} min  {result['task']} noise "
                  f"{result['noise']:.1f} {result['method']} {_describe(result['config'])} seed {result['seed']}: "
                  f"test {result['test_acc']:.1f}", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.readme:
        blocks.markers(args.readme, BLOCK)  # a missing block fails now, not after the run
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, meta_path = args.out / "runs.csv", args.out / "meta.json"
    if not args.render_only:
        meta = plan_meta(args)
        if meta_path.exists():
            previous = json.loads(meta_path.read_text())
            meta["hours"] = previous.get("hours", 0.0)
        start = time.perf_counter()
        done = {_key(r) for r in read_runs(csv_path)}
        run(sweep_plan(meta), done, args.jobs, csv_path, "sweep")
        run(chosen_plan(read_runs(csv_path), meta), done, args.jobs, csv_path, "chosen")
        run(protocol_plan(read_runs(csv_path), meta), done, args.jobs, csv_path, "equal-ρ")
        processes = f"{args.jobs} process{'es' if args.jobs > 1 else ''} of 1 torch thread"
        meta.update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), machine=blocks.host(),
                    versions=f"python {platform.python_version()}, torch {torch.__version__}; {processes}",
                    hours=meta.get("hours", 0.0) + (time.perf_counter() - start) / 3600,
                    command=" ".join(["python -m benchmarks.generalization", *sys.argv[1:]]))
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    meta = json.loads(meta_path.read_text())
    rows = read_runs(csv_path)
    text = render(rows, meta)
    (args.out / "results.md").write_text(text)
    (args.out / "configurations.md").write_text(configurations(rows))
    data = sensitivity(rows, meta)
    (args.out / "sensitivity.json").write_text(json.dumps(data) + "\n")
    figure(data, args.out / "sensitivity.png")
    if args.readme:
        blocks.splice(args.readme, text, BLOCK)
    print(text)
    return text


if __name__ == "__main__":
    main()
