"""Results table of a timm recipe: per optimizer, the final and best top-1 of each seed's summary.csv,
mean ± std over seeds, beside the paper's Table 3.

``python recipes/lib/collect_timm.py RUNS TASK`` with TASK ``imagenet_resnet50`` or ``cifar100_vit_ti``.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

PAPER = {
    "imagenet_resnet50": {"sam": "77.04 ± 0.09", "xsam": "77.22 ± 0.07"},
    "cifar100_vit_ti": {"sam": "67.80 ± 0.22", "xsam": "68.32 ± 0.18"},
}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def table(runs: Path, task: str) -> str:
    lines = ["| optimizer | seeds | final top-1 (mean ± std) | best top-1 | paper (Table 3) |", "|---|---|---|---|---|"]
    for directory in sorted(p for p in runs.iterdir() if p.is_dir()):
        finals, bests = [], []
        for summary in sorted(directory.glob("seed*/summary.csv")):
            with summary.open() as f:
                top1 = [float(row["eval_top1"]) for row in csv.DictReader(f)]
            if top1:
                finals.append(top1[-1])
                bests.append(max(top1))
        if finals:
            lines.append(f"| {directory.name} | {len(finals)} | {mean_std(finals)} | {mean_std(bests)} | "
                         f"{PAPER[task].get(directory.name, '–')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in PAPER:
        sys.exit(f"usage: collect_timm.py RUNS TASK (TASK: {', '.join(PAPER)})")
    print(table(Path(sys.argv[1]), sys.argv[2]))
