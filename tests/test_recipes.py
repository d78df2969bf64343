"""The IWSLT14 recipes: shellcheck, and the whole pipeline in its tiny mode on CPU."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "iwslt14_deen"
SCRIPTS = sorted(p for folder in ("recipes", "tools") for p in (ROOT / folder).rglob("*")
                 if p.suffix in (".sh", ".sbatch"))

pytestmark = pytest.mark.fairseq


def run(*args: str | Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    env = {"PY": sys.executable, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **env}
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


def test_scripts_pass_shellcheck():
    assert len(SCRIPTS) >= 6
    run(Path(sys.executable).parent / "shellcheck", *SCRIPTS)


def test_tiny_pipeline_end_to_end(tmp_path):
    table = run(RECIPE / "run_all.sh", "--tiny", "--seeds", "1", tmp_path).stdout
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["adam", "sam", "xsam"]
    assert "35.63 ± 0.12" in rows[2] and "35.30 ± 0.04" in rows[1]
    for optimizer in ("adam", "sam", "xsam"):
        run_dir = tmp_path / "runs" / optimizer / "seed1"
        scores = json.loads((run_dir / "bleu.json").read_text())
        assert scores["sentences"] > 50 and scores["bleu"] >= 0
        assert "H-0\t" in (run_dir / "generate.out").read_text() or "H-1\t" in (run_dir / "generate.out").read_text()
        assert (run_dir / "checkpoint_last.pt").exists()
    log = (tmp_path / "runs" / "xsam" / "seed1" / "train.log").read_text()
    assert "sam_alpha" in log and "transformer" in log
    assert (tmp_path / "data" / "tokenized" / "code").exists()


def test_collect_reports_mean_and_std_over_seeds(tmp_path):
    values = {"sam": [35.1, 35.5, 35.3], "xsam": [35.9, 35.4]}
    for optimizer, bleus in values.items():
        for seed, value in enumerate(bleus, 1):
            directory = tmp_path / optimizer / f"seed{seed}"
            directory.mkdir(parents=True)
            (directory / "bleu.json").write_text(json.dumps({"bleu": value, "sacrebleu": value - 1, "sentences": 9}))
    table = run(RECIPE / "collect.sh", tmp_path).stdout
    for optimizer, bleus in values.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {optimizer} |"))
        mean, std = statistics.mean(bleus), statistics.stdev(bleus)
        assert f"| {len(bleus)} | {mean:.2f} ± {std:.2f} | {mean - 1:.2f} ± {std:.2f} |" in row
    assert (tmp_path / "results.md").read_text().strip() == table.strip()


def test_clean_filters_like_the_standard_preparation(tmp_path):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("a b c\n\nx\n" + "w " * 176 + "\na b\n")
    tgt.write_text("a b\nz\nx y z\nv\nc d\n")
    run(sys.executable, RECIPE / "tools.py", "clean", src, tgt, tmp_path / "o.de", tmp_path / "o.en")
    assert (tmp_path / "o.de").read_text().splitlines() == ["a b c", "a b"]
    assert (tmp_path / "o.en").read_text().splitlines() == ["a b", "c d"]


@pytest.mark.parametrize(("script", "args", "message"), [
    ("train.sh", ["--optimizer", "lamb", "d", "s"], "--optimizer must be one of adam, sam, xsam (got 'lamb')"),
    ("train.sh", ["--optimizr", "sam", "d", "s"], "unknown option --optimizr"),
    ("prepare.sh", ["--small", "out"], "unknown option --small"),
    ("evaluate.sh", ["only-one"], "usage: evaluate.sh"),
])
def test_bad_arguments_fail_with_a_clear_message(script, args, message):
    result = run(RECIPE / script, *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.timm
@pytest.mark.parametrize("task", ["imagenet_resnet50", "cifar100_vit_ti"])
def test_timm_recipe_tiny_runs_and_collects(tmp_path, task):
    from examples.digits import write_digits

    write_digits(tmp_path / "digits", size=16)
    for optimizer in ("base", "xsam"):
        run(ROOT / "recipes" / task / "train.sh", "--optimizer", optimizer, "--tiny", tmp_path / "digits",
            tmp_path / "out")
        assert (tmp_path / "out" / optimizer / "seed1" / "summary.csv").exists()
    log = (tmp_path / "out" / "xsam" / "seed1" / "train.log").read_text()
    assert "alpha" in log
    table = run(ROOT / "recipes" / task / "collect.sh", tmp_path / "out").stdout
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["base", "xsam"]
    paper = {"imagenet_resnet50": "77.22 ± 0.07", "cifar100_vit_ti": "68.32 ± 0.18"}[task]
    assert paper in table.splitlines()[-1]
    bad = run(ROOT / "recipes" / task / "train.sh", "--optimizer", "adamw", "d", "o", check=False)
    assert bad.returncode == 2 and "--optimizer must be one of base, sam, xsam (got 'adamw')" in bad.stderr


@pytest.mark.parametrize(("task", "gpus", "nodes", "batch"), [
    ("imagenet_resnet50", "1", "1", "512"), ("imagenet_resnet50", "4", "1", "128"),
    ("imagenet_resnet50", "8", "2", "32"), ("cifar100_vit_ti", "2", "1", "128")])
def test_timm_recipe_splits_the_paper_batch_over_gpus(task, gpus, nodes, batch):
    """The paper's global batch holds for any GPU count: per-GPU -b and the launcher (dry run)."""
    env = {"DRY_RUN": "1", "NNODES": nodes, "RDZV_ENDPOINT": "node0:29500"}
    words = run(ROOT / "recipes" / task / "train.sh", "--optimizer", "xsam", "--gpus", gpus, "data", "out",
                **env).stdout.split()
    assert words[words.index("-b") + 1] == batch
    assert words[words.index("--opt") + 1] == "xsam"
    launcher = words[:words.index("-m")]
    if gpus == "1":
        assert launcher == [sys.executable]
    else:
        assert Path(launcher[0]).name == "torchrun" and launcher[launcher.index("--nproc_per_node") + 1] == gpus
        assert ("--nnodes" in launcher) == (nodes != "1")
    bad = run(ROOT / "recipes" / task / "train.sh", "--optimizer", "xsam", "--gpus", "3", "data", "out",
              check=False, DRY_RUN="1")
    assert bad.returncode == 2 and "does not split over 3 GPUs" in bad.stderr
