"""The timm demo: scikit-learn's digits as an ImageFolder, a small timm ResNet trained through
``timm_ext.train`` with plain SGD and with ``xsam`` (same flags otherwise), accuracy side by side.

``python -m examples.timm_demo --out out/timm_demo`` (a couple of minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import time
from pathlib import Path

from timm_ext.train import main as train

from .digits import write_digits

RUNS = {
    "sgd": ["--opt", "momentum"],
    "sam": ["--opt", "sam", "--opt-kwargs", "base=momentum", "--sam-rho", "0.05"],
    "xsam": ["--opt", "xsam", "--opt-kwargs", "base=momentum", "--sam-rho", "0.05", "--sam-rho-m", "0.3"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/timm_demo"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args(argv)
    data = args.out / "digits"
    shutil.rmtree(data, ignore_errors=True)
    write_digits(data, size=32)
    print(f"digits as an ImageFolder (1437 train / 360 validation, 32 px) -> {data}")
    print(f"timm test_resnet, {args.epochs} epochs, batch 64, lr 0.05 cosine, label smoothing 0.1, hflip off")
    print(f"{'optimizer':10s} {'top1 %':>7s} {'top5 %':>7s} {'eval loss':>9s} {'minutes':>8s}")
    lines = ["| optimizer | top1 % | top5 % | eval loss | minutes |", "|---|---|---|---|---|"]
    for name in args.runs:
        shutil.rmtree(args.out / name, ignore_errors=True)
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            metrics = train(["--data-dir", str(data), "--dataset", "", "--model", "test_resnet", "--num-classes", "10",
                             "--img-size", "32", "-b", "64", "--epochs", str(args.epochs), "--lr", "0.05",
                             "--warmup-epochs", "0", "--hflip", "0", "--workers", "0", "--log-interval", "1000",
                             "--seed", "0", "--output", str(args.out), "--experiment", name, *RUNS[name]])
        minutes = (time.perf_counter() - start) / 60
        print(f"{name:10s} {metrics['top1']:7.2f} {metrics['top5']:7.2f} {metrics['loss']:9.4f} {minutes:8.2f}",
              flush=True)
        lines.append(f"| {name} | {metrics['top1']:.2f} | {metrics['top5']:.2f} | {metrics['loss']:.4f} | "
                     f"{minutes:.2f} |")
    (args.out / "accuracy.md").write_text("\n".join(lines) + "\n")
    print(f"table -> {args.out / 'accuracy.md'}")


if __name__ == "__main__":
    main()
