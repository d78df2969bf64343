"""The README's hyperparameter tables are the declarations' own; its benchmark blocks are the harness's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.__main__ import workload_table
from benchmarks.measure import Result
from sam_plugins.describe import markdown


def test_readme_hyperparameter_tables_match_the_declarations():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- hyperparameters:begin -->\n", 1)[1].split("<!-- hyperparameters:end -->", 1)[0]
    assert block.strip() == markdown().strip()


def _bench_block(readme: str, section: str) -> str:
    return readme.split(f"<!-- bench:{section}:begin -->\n", 1)[1].split(f"<!-- bench:{section}:end -->", 1)[0]


@pytest.mark.parametrize(("section", "workloads"), [
    ("cpu", ("resnet18_cifar", "vit_ti_cifar", "transformer_small")),
    ("resnet50-cpu", ("resnet50",)),
])
def test_readme_benchmark_blocks_are_the_current_harness_output(section, workloads):
    """Written by `python -m sam_plugins.bench --readme README.md [--section ...]`: header, tables in the
    harness's current columns, targets (a change of the columns fails here until the blocks are rerun)."""
    block = _bench_block((Path(__file__).resolve().parent.parent / "README.md").read_text(), section)
    lines = block.splitlines()
    assert lines[0].startswith("Measured ") and "torch " in lines[0] and "pytorch_optimizer " in lines[0]
    assert lines[1].startswith("Command: `python -m sam_plugins.bench")
    header = workload_table([Result("base", "base", times=[1.0]), Result("sam", "ours", times=[1.0])])[0]
    for workload in workloads:
        assert f"**{workload}** (batch" in block
    assert block.count(header) == len(workloads)
    assert "**Targets**" in block and "| target | measured | limit | |" in block


def test_readme_toy2d_lines_are_what_the_demo_prints():
    from benchmarks.blocks import block
    from examples.demo import toy_lines, toy_paths

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = ["```", "2D test function (XSAM paper App. D.1) -> out/demo/toy2d.png", *toy_lines(toy_paths()), "```"]
    assert block(readme, "demo:toy2d") == "\n".join(lines) + "\n"


def test_readme_generalization_block_and_docs_are_rendered_from_the_committed_runs():
    """The README block, configurations.md and the sensitivity figure's data, from runs.csv and meta.json."""
    import json

    from benchmarks import generalization as g
    from benchmarks.blocks import block

    root = Path(__file__).resolve().parent.parent
    folder = root / "docs" / "generalization"
    meta = json.loads((folder / "meta.json").read_text())
    rows = g.read_runs(folder / "runs.csv")
    assert block((root / "README.md").read_text(), g.BLOCK) == g.render(rows, meta)
    assert (folder / "results.md").read_text() == g.render(rows, meta)
    assert (folder / "configurations.md").read_text() == g.configurations(rows)
    assert json.loads((folder / "sensitivity.json").read_text()) == json.loads(json.dumps(g.sensitivity(rows, meta)))
