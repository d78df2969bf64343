"""The benchmark harness in its smoke mode (tiny models; nothing here is timed) and its buffer counter."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import sam_plugins
from benchmarks import __main__ as bench
from benchmarks.contenders import Contender, _base, _drive_base
from benchmarks.measure import Gradients, count_buffers
from benchmarks.workloads import build

pytest.importorskip("pytorch_optimizer")
PEERS = ["SAM", "SAM foreach", "GSAM", "WSAM", "FriendlySAM"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    text = bench.main(["--smoke", "--csv", str(out / "bench.csv"), "--markdown", str(out / "bench.md")])
    with open(out / "bench.csv") as f:
        rows = list(csv.DictReader(f))
    return text, rows, out


def test_every_contender_is_measured_on_every_workload(smoke):
    text, rows, out = smoke
    expected = ["base", *sam_plugins.available(), "sam k=2", "xsam k=2", "xsam probe", *PEERS]
    for workload in ("convnet_tiny", "transformer_tiny"):
        assert [r["optimizer"] for r in rows if r["workload"] == workload] == expected
    assert all(float(r["median_s"]) > 0 and float(r["optimizer_s"]) >= 0 for r in rows)
    assert (out / "bench.md").read_text() == text
    assert text.startswith("Measured ") and "**Targets**" in text


def test_forward_passes_per_update(smoke):
    _, rows, _ = smoke
    forwards = {r["optimizer"]: float(r["forwards_per_update"]) for r in rows if r["workload"] == "convnet_tiny"}
    samples = len(sam_plugins.XSAM(nn.Linear(1, 1)).alphas())
    assert forwards["base"] == 1 and forwards["sam"] == 2 and forwards["sam k=2"] == 3 and forwards["msam"] == 3
    assert forwards["xsam"] == 2 and forwards["xsam probe"] == 2 + samples
    assert all(forwards[name] == 2 for name in PEERS)


@pytest.mark.parametrize("workload", ["convnet_tiny", "transformer_tiny"])
def test_memory_targets_hold(smoke, workload):
    """SAM/XSAM keep one parameter-sized buffer beyond the base, two while probing, none more per step."""
    _, rows, _ = smoke
    by = {r["optimizer"]: r for r in rows if r["workload"] == workload}

    def value(name, column):
        return float(by[name][column])

    assert value("sam", "buffers_held") == pytest.approx(1, abs=0.01)
    assert value("xsam", "buffers_held") == pytest.approx(1, abs=0.01)
    assert value("sam", "buffers_in_passes") == pytest.approx(1, abs=0.01)
    assert value("xsam probe", "buffers_in_probes") == pytest.approx(2, abs=0.01)
    assert value("sam k=2", "buffers_in_passes") == pytest.approx(value("sam", "buffers_in_passes"), abs=0.01)
    assert value("xsam k=2", "buffers_in_passes") == pytest.approx(value("xsam", "buffers_in_passes"), abs=0.01)
    assert value("SAM", "buffers_in_passes") == pytest.approx(1, abs=0.01)  # its clone of θ


def test_our_sam_agrees_with_the_peer_sam(smoke):
    text, _, _ = smoke
    lines = [line for line in text.splitlines() if "pytorch_optimizer SAM: largest difference" in line]
    assert len(lines) == 2 and all(line.endswith("| met |") for line in lines)
    assert all(float(line.split("|")[2]) < 1e-6 for line in lines)  # the peer sums the norm in float32


def test_operation_counts_show_who_loops_over_parameters(smoke):
    """Beyond the base's step, pytorch_optimizer's SAM dispatches operations per parameter tensor (36 in
    transformer_tiny, 8 in convnet_tiny); ours dispatch no more for more tensors (BatchNorm statistics add
    their own copies in convnet_tiny)."""
    _, rows, _ = smoke
    ops = {(r["workload"], r["optimizer"]): float(r["operations"]) for r in rows}

    def extra(workload, name):
        return ops[(workload, name)] - ops[(workload, "base")]

    assert extra("transformer_tiny", "SAM") - extra("convnet_tiny", "SAM") >= 36 - 8
    for name in sam_plugins.available():
        assert 0 < extra("transformer_tiny", name) <= extra("convnet_tiny", name)


def test_buffer_counter_sees_what_an_optimizer_keeps():
    """Independent of the engine: SGD that also keeps one and then two clones of the parameters."""
    work = build("convnet_tiny", torch.device("cpu"))
    pre = Gradients.of(work)

    def hoarding(copies):
        def build_optimizer(model, w):
            opt = _base(model, w)
            opt.kept = [[p.detach().clone() for p in model.parameters()] for _ in range(copies)]
            return opt

        return Contender(f"keeps {copies}", "base", build_optimizer, _drive_base)

    plain = count_buffers(Contender("base", "base", _base, _drive_base), work, pre)[0]
    for copies in (1, 2):
        held = count_buffers(hoarding(copies), work, pre)[0]
        assert held - plain == pytest.approx(copies, abs=1e-9)


def test_readme_block_is_replaced_and_missing_markers_fail(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:cpu:begin -->\nold\n<!-- bench:cpu:end -->\nafter\n")
    bench.splice(readme, "new table\n", "cpu")
    assert readme.read_text() == "intro\n<!-- bench:cpu:begin -->\nnew table\n<!-- bench:cpu:end -->\nafter\n"
    with pytest.raises(SystemExit, match="no <!-- bench:gpu:begin -->"):
        bench.splice(readme, "x", "gpu")


def test_a_missing_readme_block_fails_before_measuring(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:cpu:begin -->\n<!-- bench:cpu:end -->\n")

    def measured_anyway(*args, **kwargs):
        raise AssertionError("measured before checking the README")

    monkeypatch.setattr(bench, "measure_workload", measured_anyway)
    with pytest.raises(SystemExit, match="no <!-- bench:resnet50-cpu:begin -->"):
        bench.main(["--smoke", "--readme", str(readme), "--section", "resnet50-cpu"])


@pytest.mark.parametrize(("args", "message"), [
    (["--repeats", "0"], "--repeats 0 is invalid; allowed: an int >= 1"),
    (["--optimizer-repeats", "-3"], "--optimizer-repeats -3 is invalid; allowed: an int >= 1"),
    (["--epoch-updates", "0"], "--epoch-updates 0 is invalid; allowed: an int >= 1"),
    (["--rho", "-1"], "--rho -1.0 is invalid; allowed: a float > 0"),
    (["--workloads", "resnet99"], "invalid choice: 'resnet99'"),
])
def test_bad_arguments_fail_with_the_reason(args, message, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(args)
    assert message in capsys.readouterr().err
