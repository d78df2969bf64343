"""The generalization benchmark's pipeline in --quick mode (real digits, real training), its label noise, and the
selection on the validation split."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from sam_plugins.bench import generalization as g

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def test_label_noise_moves_the_asked_share_to_another_class_and_splits_80_20():
    y = torch.arange(5000) % 10
    train, val, labels = g.noisy_split(y, 0.4, seed=3)
    assert len(train) == 4000 and len(val) == 1000 and set(train.tolist()).isdisjoint(val.tolist())
    moved = labels != y
    assert abs(float(moved.float().mean()) - 0.4) < 0.02
    assert torch.equal(g.noisy_split(y, 0.4, seed=3)[2], labels)  # the same noisy labels for every optimizer
    assert torch.equal(g.noisy_split(y, 0.0, seed=3)[2], y)


def test_a_run_is_determined_by_its_seed():
    g._DATA["digits"] = g.load_task("digits")
    spec = g.Spec("digits", 0.4, "sam", json.dumps({"rho": 0.05}), 1, 1)
    first, second = g.train(spec), g.train(spec)
    assert (first["test_acc"], first["val_acc"], first["train_acc"]) == \
        (second["test_acc"], second["val_acc"], second["train_acc"])


def test_quick_mode_sweeps_chooses_on_validation_and_fills_the_readme_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- generalization:begin -->\nold\n<!-- generalization:end -->\nafter\n")
    out = tmp_path / "g"
    text = g.main(["--quick", "--out", str(out), "--jobs", "2", "--readme", str(readme)])
    rows = g.read_runs(out / "runs.csv")
    # sweep: sgd 1 + sam 2 + xsam 2 configurations × 2 noise levels × seeds 0, 1; then the chosen ones on seed 2
    assert len(rows) == (1 + 2 + 2) * 2 * 2 + 3 * 2
    for noise in g.NOISES:
        for method in ("sgd", "sam", "xsam"):
            runs = [r for r in rows if r["noise"] == noise and r["method"] == method]
            by_config = {}
            for r in runs:
                if r["seed"] < 2:
                    by_config.setdefault(r["config"], []).append(r["val_acc"])
            best = max(by_config, key=lambda c: statistics.fmean(by_config[c]))
            assert [r["config"] for r in runs if r["seed"] == 2] == [best]
    xsam = [r for r in rows if r["method"] == "xsam"]
    assert all(0 <= r["edge_share"] <= 1 and 0 <= r["alpha_mean"] <= 2 for r in xsam)
    assert all(r["alpha_mean"] is None for r in rows if r["method"] != "xsam")
    assert readme.read_text() == f"intro\n<!-- generalization:begin -->\n{text}<!-- generalization:end -->\nafter\n"
    assert text.count("| method | chosen | test % |") == 2 and "over 3 seeds" in text
    for figure in ("accuracy.png", "xsam_probes.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
