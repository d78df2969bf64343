"""The README's hyperparameter tables are the declarations' own."""

from __future__ import annotations

from pathlib import Path

from sam_plugins.describe import markdown


def test_readme_hyperparameter_tables_match_the_declarations():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- hyperparameters:begin -->\n", 1)[1].split("<!-- hyperparameters:end -->", 1)[0]
    assert block.strip() == markdown().strip()


def test_readme_benchmark_block_is_the_harness_output():
    """The block is written by `python -m sam_plugins.bench --readme README.md`: its header, tables and targets."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- bench:cpu:begin -->\n", 1)[1].split("<!-- bench:cpu:end -->", 1)[0]
    lines = block.splitlines()
    assert lines[0].startswith("Measured ") and "torch " in lines[0] and "pytorch_optimizer " in lines[0]
    assert lines[1].startswith("Command: `python -m sam_plugins.bench")
    for workload in ("resnet18_cifar", "vit_ti_cifar", "transformer_small"):
        assert f"**{workload}** (batch" in block
    assert "**Targets**" in block and "| target | measured | limit | |" in block
