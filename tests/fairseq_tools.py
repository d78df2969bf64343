"""Shared pieces of the fairseq tests: a tiny binarized corpus and the real CLIs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fairseq_ext.cli import USER_DIR, preprocess
from fairseq_ext.cli import run as cli

TINY_MODEL = [
    "--task", "translation", "--arch", "transformer", "--share-all-embeddings",
    "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]
COMMON = [
    "--user-dir", USER_DIR, *TINY_MODEL, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "800", "--seed", "1", "--log-format", "simple", "--log-interval", "1", "--no-progress-bar",
    "--cpu", "--num-workers", "0", "--no-epoch-checkpoints", "--lr", "1e-3",
    # No prefetch thread: a run of a few updates can end while fairseq's BufferedIterator thread is inside
    # torch, and interpreter exit then aborts ("terminate called without an active exception", 8 of 12
    # one-update adam runs here; none without the thread).
    "--data-buffer-size", "0",
]


def make_data_bin(root: Path, train: int = 600, valid: int = 40, test: int = 40) -> Path:
    from examples.corpus import write_corpus

    raw, data_bin = root / "raw", root / "data-bin"
    write_corpus(raw, {"train": train, "valid": valid, "test": test}, seed=0)
    preprocess(raw, data_bin)
    return data_bin


def train(data_bin: Path, save_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return cli("fairseq-train", str(data_bin), *COMMON, "--save-dir", str(save_dir), *args, check=check, timeout=900)


def load(path: Path) -> dict:
    from fairseq import checkpoint_utils

    import fairseq_ext  # noqa: F401  (lets fairseq read checkpoints on torch >= 2.6)

    return checkpoint_utils.load_checkpoint_to_cpu(str(path))
