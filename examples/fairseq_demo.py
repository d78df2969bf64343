"""The fairseq demo: the toy German–English corpus, a small transformer trained with plain ``adam``
, ``sam`` and ``xsam``, translated by fairseq-generate (beam 5) and scored with sacreBLEU.

``python -m examples.fairseq_demo --out out/fairseq_demo`` runs the real fairseq CLIs end to end in a few
minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

from fairseq_ext.cli import USER_DIR, preprocess, run

from .corpus import write_corpus

MODEL = [
    "--task", "translation", "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--dropout", "0.1",
]
TRAINING = [
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--adam-betas", "(0.9, 0.98)", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50",
    "--weight-decay", "1e-4", "--max-tokens", "2000", "--log-format", "simple", "--log-interval", "50",
    "--no-progress-bar", "--cpu", "--num-workers", "0", "--no-epoch-checkpoints",
]
# ρ: the paper's IWSLT radius (0.15, for a 512-wide model) scaled down by 3 for this 64-wide one.
# XSAM's ρ_m = 2ρ: the ratio of the XSAM paper's equal-ρ comparison, which the generalization benchmark uses too.
RUNS = {
    "adam": ["--optimizer", "adam"],
    "sam": ["--optimizer", "sam", "--sam-rho", "0.05"],
    "xsam": ["--optimizer", "xsam", "--sam-rho", "0.05", "--sam-rho-m", "0.1"],
}


def bleu(data_bin: Path, checkpoint: Path) -> float:
    out = run("fairseq-generate", str(data_bin), "--user-dir", USER_DIR, "--path", str(checkpoint), "--beam", "5",
              "--remove-bpe", "--gen-subset", "test", "--batch-size", "128", "--cpu", "--scoring", "sacrebleu")
    match = re.search(r"BLEU = ([\d.]+)", out.stdout + out.stderr)
    if match is None:
        raise RuntimeError(f"no BLEU in fairseq-generate's output:\n{(out.stdout + out.stderr)[-2000:]}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/fairseq_demo"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", nargs="*", default=sorted(RUNS), choices=sorted(RUNS))
    args = parser.parse_args(argv)
    raw, data_bin = args.out / "raw", args.out / "data-bin"
    write_corpus(raw, {"train": 4000, "valid": 200, "test": 300}, seed=0)
    shutil.rmtree(data_bin, ignore_errors=True)
    preprocess(raw, data_bin)
    print(f"toy De-En corpus (4000 train / 200 valid / 300 test sentences) -> {data_bin}")
    print(f"transformer 2+2 layers, dim 64, {args.epochs} epochs, seed {args.seed}; fairseq-generate beam 5")
    print(f"{'optimizer':10s} {'BLEU':>6s} {'valid loss':>10s} {'minutes':>8s} {'alpha*':>8s}")
    rows = []
    for name in args.runs:
        save_dir = args.out / name
        shutil.rmtree(save_dir, ignore_errors=True)
        start = time.perf_counter()
        log = run("fairseq-train", str(data_bin), "--user-dir", USER_DIR, *MODEL, *TRAINING, *RUNS[name],
                  "--max-epoch", str(args.epochs), "--seed", str(args.seed), "--save-dir", str(save_dir))
        minutes = (time.perf_counter() - start) / 60
        valid = float(re.findall(r"valid on 'valid' subset \| loss ([\d.]+)", log.stdout + log.stderr)[-1])
        score = bleu(data_bin, save_dir / "checkpoint_last.pt")
        alphas = re.findall(r"\| sam_alpha ([\d.]+)", log.stdout + log.stderr)
        alpha = alphas[-1] if alphas else "-"
        rows.append((name, score, valid, minutes, alpha))
        print(f"{name:10s} {score:6.2f} {valid:10.3f} {minutes:8.2f} {alpha:>8s}", flush=True)
    lines = ["| optimizer | BLEU | valid loss | minutes | last α* |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {b:.2f} | {v:.3f} | {m:.2f} | {a} |" for n, b, v, m, a in rows]
    (args.out / "bleu.md").write_text("\n".join(lines) + "\n")
    print(f"table -> {args.out / 'bleu.md'}")


if __name__ == "__main__":
    main()
