"""The generalization benchmark: its label noise, its runs (early stopping), the selection on the validation split
(one rule for every method, ties by grid order, independent of run order), resuming, and the --quick pipeline."""

from __future__ import annotations

import csv
import json
import random
import statistics

import pytest
import torch

from benchmarks import generalization as g

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


@pytest.fixture
def torch_threads():
    """A run sets one torch thread (the benchmark's worker processes); later tests in this process get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_run_is_determined_by_its_seed_and_early_stops_on_validation(torch_threads):
    g._DATA["digits"] = g.load_task("digits")
    spec = g.Spec("digits", 0.4, "sam", json.dumps({"rho": 0.05}), 1, 3)
    first, second = g.train(spec), g.train(spec)
    assert first == {**second, "epoch_seconds": first["epoch_seconds"]}
    assert first["es_val_acc"] >= first["val_acc"] and 1 <= first["es_epoch"] <= 3
    if first["es_epoch"] == 3:
        assert first["es_test_acc"] == first["test_acc"]


def test_every_method_gets_six_configurations_on_one_shared_rho_grid():
    for method in ("sam", "fsam", "wsam", "gsam", "msam", "evsam"):
        assert [c["rho"] for c in g.grid(method)] == list(g.RHO_GRID)
    assert [c["rho"] for c in g.grid("asam")] == pytest.approx([10 * r for r in g.RHO_GRID])
    assert all(c["rho_m"] == 2 * c["rho"] for c in g.grid("xsam"))
    assert len(g.grid("sgd")) == len(g.grid("sgd-2x")) == len(g.RHO_GRID) == 6


def row(method, config, seed, val, es_val):
    return dict(task="digits", noise=0.0, method=method, config=g.as_config(config), seed=seed, epochs=2,
                val_acc=val, es_val_acc=es_val)


def test_ties_go_to_the_smaller_radius_whatever_the_order_of_the_runs():
    meta = dict(tasks=["digits"], noises=[0.0], methods=["sam"], sweep_seeds=2, rho_grid=[0.05, 0.1, 0.2])
    rows = [row("sam", {"rho": 0.2}, s, 90.0, 95.0) for s in (0, 1)] + \
           [row("sam", {"rho": 0.1}, s, 90.0, 95.0) for s in (0, 1)] + \
           [row("sam", {"rho": 0.05}, s, 80.0 + 20 * s, 91.0) for s in (0, 1)]  # a mean of 90.0 too
    for _ in range(5):
        random.shuffle(rows)
        assert g.chosen(rows, meta, "final") == {("digits", 0.0, "sam"): g.as_config({"rho": 0.05})}
        assert g.chosen(rows, meta, "early") == {("digits", 0.0, "sam"): g.as_config({"rho": 0.1})}


def expected_choice(rows, noise, method, column, meta):
    """The selection rule written out independently: best mean validation score over the sweep seeds, the first
    configuration in grid order among equals."""
    field = "es_val_acc" if column == "early" else "val_acc"
    best = None
    for config in (g.as_config(c) for c in g.grid(method, meta["rho_grid"])):
        values = [r[field] for r in rows if (r["noise"], r["method"], r["config"]) == (noise, method, config)
                  and r["seed"] < meta["sweep_seeds"]]
        if best is None or statistics.fmean(values) > best[0]:
            best = (statistics.fmean(values), config)
    return best[1]


def test_quick_mode_sweeps_chooses_on_validation_resumes_and_renders_the_same_from_any_row_order(tmp_path):
    out = tmp_path / "g"
    text = g.main(["--quick", "--out", str(out), "--jobs", "2"])
    meta = json.loads((out / "meta.json").read_text())
    rows = g.read_runs(out / "runs.csv")
    sweep = [r for r in rows if r["seed"] < 2 and r["method"] in meta["methods"]]
    assert len({(r["noise"], r["method"], r["config"], r["seed"]) for r in sweep}) == (6 + 2 + 2 + 2) * 2 * 2
    for noise in g.NOISES:
        for method in meta["methods"]:
            picked = {expected_choice(rows, noise, method, column, meta) for column in g.COLUMNS}
            protocol = {g.as_config(c) for rho in meta["equal_rho"]
                        for m, c in g.protocol_configs(rows, meta, "digits", noise, rho).items() if m == method}
            third_seed = {r["config"] for r in rows if (r["noise"], r["method"], r["seed"]) == (noise, method, 2)}
            assert third_seed == picked | protocol
    for noise in g.NOISES:  # the equal-ρ comparison: 6 methods at ρ 0.1, each on the 3 paired seeds
        configs = g.protocol_configs(rows, meta, "digits", noise, 0.1)
        assert configs["xsam-fixed"]["alpha"] * 4 == round(configs["xsam-fixed"]["alpha"] * 4)
        for method, config in configs.items():
            assert {r["seed"] for r in rows if (r["noise"], r["method"], r["config"]) ==
                    (noise, method, g.as_config(config))} == {0, 1, 2}
    assert text.count("| method | chosen (last epoch) |") == 2 and text.count(": equal ρ**") == 2
    assert json.loads((out / "sensitivity.json").read_text()) == json.loads(json.dumps(g.sensitivity(rows, meta)))
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    csv_before = (out / "runs.csv").read_text()
    g.main(["--quick", "--out", str(out), "--jobs", "2"])  # a re-run finds every run done
    assert (out / "runs.csv").read_text() == csv_before

    lines = csv_before.splitlines()
    shuffled = [lines[0], *random.Random(0).sample(lines[1:], len(lines) - 1)]
    (out / "runs.csv").write_text("\n".join(shuffled) + "\n")
    meta = json.loads((out / "meta.json").read_text())
    assert g.render(g.read_runs(out / "runs.csv"), meta) == g.render(rows, meta)
    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_quick_results_never_go_into_a_readme(tmp_path, capsys):
    with pytest.raises(SystemExit):
        g.main(["--quick", "--out", str(tmp_path), "--readme", str(tmp_path / "README.md")])
    assert "--quick runs a 2-epoch pipeline check" in capsys.readouterr().err
    assert not (tmp_path / "runs.csv").exists()
