"""``python -m benchmarks``: time every variant beside the base optimizer and pytorch_optimizer.

Per workload (model + batch + the paper's base optimizer) it measures, in one run: time per update
(median and interquartile spread over round-robin repeats after warm-up) and its ratio to the base
and to our SAM; the optimizer-side time (closures install precomputed gradients instead of running
the model; the installs are timed and subtracted) and the operations it dispatches (a GPU's kernel
launches, counted exactly on any device); XSAM's per-epoch cost with one probe per epoch (the
workload's training set over the batch, or ``--epoch-updates``); the parameter-sized buffers each
optimizer keeps beyond its base (counted from live tensor storages) after an update, in gradient
passes and in probes; on a GPU the peak allocated memory relative to SAM; and whether our SAM's
update agrees with pytorch_optimizer's. The targets are checked and a miss says by how much.
``--smoke`` runs tiny models for the tests.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import datetime
import math
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import blocks
from .contenders import PEER_LIBRARY, Contender, ours, peer_version, peers
from .measure import (
    Counter,
    Gradients,
    Result,
    agreement,
    count_buffers,
    count_operations,
    gpu_peak,
    install_time,
    real_closure,
    restoring_closure,
    round_robin,
)
from .workloads import CPU_SET, GPU_SET, SMOKE_SET, WORKLOADS, build

SETS = {"cpu": CPU_SET, "gpu": GPU_SET, "smoke": SMOKE_SET}
AGREEMENT_TOLERANCE = 1e-6  # largest parameter difference relative to the largest parameter change


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=sorted(SETS), default=None,
                   help="workload set (default: gpu on a GPU, else cpu); --smoke is --set smoke with 1+2 repeats")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), help="instead of a set")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: per workload and device")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--optimizer-repeats", type=int, default=50,
                   help="repeats of the optimizer-side timing (no forward or backward, so many are cheap)")
    p.add_argument("--epoch-updates", type=int, default=None,
                   help="updates per epoch for XSAM's once-per-epoch probe (default: the workload's training "
                        "set over the timed batch, e.g. CIFAR's 50000 / 128 = 391)")
    p.add_argument("--rho", type=float, default=0.05, help="ρ of SAM, F-SAM, WSAM, GSAM and the peers")
    p.add_argument("--no-peers", action="store_true", help=f"leave out {PEER_LIBRARY}")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--csv", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--readme", type=Path,
                   help="replace the block between <!-- bench:SECTION:begin/end --> in this Markdown file "
                   "(docs/benchmarks.md holds the cpu, resnet50-cpu and gpu blocks)")
    p.add_argument("--section", help="the block to replace (default: the set's name)")
    args = p.parse_args(argv)
    args.command = list(sys.argv[1:] if argv is None else argv)
    for name in ("warmup", "repeats", "optimizer_repeats", "epoch_updates"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid; allowed: an int >= 1")
    if args.rho <= 0:
        p.error(f"--rho {args.rho} is invalid; allowed: a float > 0")
    if args.smoke:
        args.set, args.warmup, args.repeats, args.optimizer_repeats = "smoke", 1, 2, 2
    args.set = args.set or ("gpu" if args.device.startswith("cuda") else "cpu")
    args.section = args.section or args.set
    return args


@dataclass
class Measured:
    """One workload's results; ``agree`` = (largest difference, largest change) of SAM vs the peer's SAM."""

    name: str
    base: str
    batch: int
    epoch_samples: int
    tensors: int
    results: list[Result]
    agree: tuple[float, float] | None


def measure_workload(name: str, args: argparse.Namespace, device: torch.device, with_peers: bool) -> Measured:
    work = build(name, device, args.batch_size)
    contenders: list[Contender] = ours(args.rho) + (peers(args.rho) if with_peers else [])
    results = [Result(c.name, c.family) for c in contenders]
    pre = Gradients.of(work)
    for contender, result in zip(contenders, results):
        result.held, result.peak_pass, result.peak_probe = count_buffers(contender, work, pre)
        result.operations = count_operations(contender, work, pre)
        if device.type == "cuda":
            result.gpu_peak_bytes = gpu_peak(contender, work)
    entries, restoring = [], []
    for contender in contenders:
        model = copy.deepcopy(work.model)
        opt = contender.build(model, work)
        counter = Counter()
        entries.append((contender, opt, real_closure(work, model, counter), counter))
        installs = Counter()
        restoring.append((contender, opt, restoring_closure(pre, model, opt, installs), installs))
    for result, (times, calls) in zip(results, round_robin(entries, args.warmup, args.repeats, device)):
        result.times, result.forwards = times, calls
    install = install_time(pre, copy.deepcopy(work.model), device, args.optimizer_repeats)
    optimizer_side = round_robin(restoring, args.warmup, args.optimizer_repeats, device)
    for result, (times, installs) in zip(results, optimizer_side):
        result.optimizer_times = [max(t - installs * install, 0.0) for t in times]
    agree = None
    if with_peers:
        by_name = {(c.family, c.name): c for c in contenders}
        agree = agreement(by_name[("ours", "sam")], by_name[(PEER_LIBRARY, "SAM")], work)
    tensors = len(list(work.model.parameters()))
    return Measured(name, work.base, work.batch_size, work.epoch_samples, tensors, results, agree)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def _find(results: list[Result], family: str, name: str) -> Result | None:
    return next((r for r in results if r.family == family and r.name == name), None)


def _buffers(value: float, base: float) -> str:
    return "" if math.isnan(value) else f"{value - base:.2f}"


def workload_table(results: list[Result]) -> list[str]:
    """Markdown rows for one workload; buffers are counted beyond the base optimizer's own state."""
    base, sam = _find(results, "base", "base"), _find(results, "ours", "sam")
    gpu = any(not math.isnan(r.gpu_peak_bytes) for r in results)
    header = ["optimizer", "library", "fwd/update", "ms/update", "spread", "× base", "× SAM", "optimizer ms",
              "ops", "buffers held", "in passes", "in probes", *(["GPU peak × SAM"] if gpu else [])]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|"]
    for r in results:
        library = {"base": "torch.optim", "ours": "sam_plugins"}.get(r.family, r.family)
        cells = [r.name, library, f"{r.forwards:.2f}", f"{1e3 * r.median:.1f}", f"±{100 * r.spread:.0f}%",
                 f"{_ratio(r.median, base.median):.2f}", f"{_ratio(r.median, sam.median):.2f}",
                 f"{1e3 * r.optimizer_median:.2f}"]
        if r is base:
            cells += [f"{r.operations:.0f}", f"(base: {r.held:.2f})", "", ""]
        else:
            cells += [f"{r.operations:.0f}", _buffers(r.held, base.held), _buffers(r.peak_pass, base.held),
                      _buffers(r.peak_probe, base.held)]
        if gpu:
            cells.append(f"{_ratio(r.gpu_peak_bytes, sam.gpu_peak_bytes):.2f}")
        lines.append(f"| {' | '.join(cells)} |")
    return lines


@dataclass
class Target:
    """A measured value against its bound; ``slack`` absorbs scalars and normalization statistics, far
    below one parameter-sized buffer, in the buffer counts."""

    what: str
    value: float
    bound: float
    slack: float = 0.0

    @property
    def met(self) -> bool:
        return self.value <= self.bound + self.slack

    def line(self) -> str:
        verdict = "met"
        if not self.met:
            verdict = f"**missed** by {self.value - self.bound:+.3g}"
            if self.bound > 0:
                verdict += f" ({self.value / self.bound:.2f}×)"
        return f"| {self.what} | {self.value:.3g} | ≤ {self.bound} | {verdict} |"


def targets(m: Measured, args: argparse.Namespace, device: torch.device) -> list[Target]:
    """Every target this workload can check."""
    results, agree = m.results, m.agree
    base, sam, xsam = (_find(results, "base", "base"), _find(results, "ours", "sam"), _find(results, "ours", "xsam"))
    probe = _find(results, "ours", "xsam probe")
    u = args.epoch_updates or math.ceil(m.epoch_samples / m.batch)
    epoch = f"{u} updates" if args.epoch_updates else f"{m.epoch_samples} samples = {u} updates of {m.batch}"
    # A steady XSAM update runs SAM's passes plus its own arithmetic, so it is timed as SAM's update plus
    # the optimizer-side difference: the ~1 % gap is below the spread of full updates on a shared machine.
    steady = sam.median + xsam.optimizer_median - sam.optimizer_median
    direct = _ratio(probe.median + (u - 1) * xsam.median, u * sam.median)
    found = [Target(f"XSAM epoch / SAM epoch ({epoch}, one probe; a steady update = SAM's + the "
                    f"optimizer-side difference; from full-update medians alone: {direct:.3f})",
                    _ratio(probe.median + (u - 1) * steady, u * sam.median), 1.02)]
    peer = _find(results, PEER_LIBRARY, "SAM")
    if peer is not None:
        found.append(Target(f"our SAM optimizer-side / {PEER_LIBRARY} SAM's",
                            _ratio(sam.optimizer_median, peer.optimizer_median), 0.5 if device.type == "cuda" else 1.0))
    slack = 0.01
    for name in ("sam", "xsam"):
        row, multi = _find(results, "ours", name), _find(results, "ours", f"{name} k=2")
        found.append(Target(f"{name} buffers held beyond the base", row.held - base.held, 1, slack))
        found.append(Target(f"{name} k=2: buffers added by the second step",
                            max(multi.peak_pass - row.peak_pass, 0.0), 0, slack))
    found.append(Target("xsam buffers in probes beyond the base", probe.peak_probe - base.held, 2, slack))
    if agree is not None:
        difference, change = agree
        found.append(Target(f"our SAM vs {PEER_LIBRARY} SAM: largest difference / update size (SGD, 2 updates, "
                            "float64, no dropout)", _ratio(difference, change), AGREEMENT_TOLERANCE))
    return found


def machine(device: torch.device, workloads: list[str], command: list[str]) -> list[str]:
    where = f"{blocks.host()}, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}; host {where}"
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    versions += [f"{PEER_LIBRARY} {v}" for v in [peer_version()] if v]
    for module in ("torchvision", "timm"):
        if module in sys.modules:
            versions.append(f"{module} {sys.modules[module].__version__}")
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return [f"Measured {today} on {where}; {', '.join(versions)}.",
            f"Command: `{' '.join(['python -m benchmarks', *command])}` (workloads: {', '.join(workloads)})."]


def report(measured: list[Measured], args: argparse.Namespace, device: torch.device) -> str:
    lines = machine(device, [m.name for m in measured], args.command)
    lines += ["", f"Times over {args.repeats} round-robin repeats after {args.warmup} warm-up updates "
              f"({args.optimizer_repeats} for the optimizer-side times); spread = interquartile range / median; "
              "optimizer ms = time outside forward and backward; ops = "
              "operations dispatched per update outside forward and backward, the base optimizer's step included "
              "(a GPU launches a kernel for each but views, so per-parameter loops cost launches that grow with the "
              "parameter tensors); buffers in units of the parameters' bytes, beyond what the base optimizer keeps "
              "(its state and the gradient, shown in its row)."]
    found: list[Target] = []
    for m in measured:
        heading = f"**{m.name}** (batch {m.batch}, base {m.base}, {m.tensors} parameter tensors)"
        lines += ["", heading, "", *workload_table(m.results)]
        found += [dataclasses.replace(t, what=f"{m.name}: {t.what}") for t in targets(m, args, device)]
    lines += ["", "**Targets**", "", "| target | measured | limit | |", "|---|---|---|---|", *(t.line() for t in found)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, measured: list[Measured]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["workload", "batch", "base", "optimizer", "library", "forwards_per_update", "median_s",
                         "spread", "optimizer_s", "operations", "buffers_held", "buffers_in_passes",
                         "buffers_in_probes", "gpu_peak_bytes"])
        for m in measured:
            base = _find(m.results, "base", "base")
            for r in m.results:
                writer.writerow([m.name, m.batch, m.base, r.name, r.family, r.forwards, r.median, r.spread,
                                 r.optimizer_median, r.operations, r.held - base.held, r.peak_pass - base.held,
                                 r.peak_probe - base.held, r.gpu_peak_bytes])


def splice(path: Path, block: str, section: str) -> None:
    """Replace the text between ``<!-- bench:SECTION:begin -->`` and ``<!-- bench:SECTION:end -->``."""
    blocks.splice(path, block, f"bench:{section}")


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    names = args.workloads or list(SETS[args.set])
    if args.readme:
        blocks.markers(args.readme, f"bench:{args.section}")  # a missing block fails now, not after the run
    with_peers = not args.no_peers and peer_version() is not None
    if not args.no_peers and not with_peers:
        print(f"{PEER_LIBRARY} is not installed (pip install 'sam-plugins[bench]'); timing ours only", file=sys.stderr)
    measured = []
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        measured.append(measure_workload(name, args, device, with_peers))
    text = report(measured, args, device)
    print(text)
    if args.csv:
        write_csv(args.csv, measured)
    if args.markdown:
        args.markdown.write_text(text)
    if args.readme:
        splice(args.readme, text, args.section)
    return text


if __name__ == "__main__":
    main()
