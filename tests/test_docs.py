"""The docs' hyperparameter tables are the declarations' own; their benchmark blocks are the harness's; every
relative link of the README and the docs pages resolves; the README's PyTorch example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.__main__ import workload_table
from benchmarks.measure import Result
from sam_plugins.describe import markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_readme_hyperparameter_tables_match_the_declarations():
    readme = (DOCS / "variants.md").read_text()
    block = readme.split("<!-- hyperparameters:begin -->\n", 1)[1].split("<!-- hyperparameters:end -->", 1)[0]
    assert block.strip() == markdown().strip()


def _bench_block(readme: str, section: str) -> str:
    return readme.split(f"<!-- bench:{section}:begin -->\n", 1)[1].split(f"<!-- bench:{section}:end -->", 1)[0]


@pytest.mark.parametrize(("section", "workloads"), [
    ("cpu", ("resnet18_cifar", "vit_ti_cifar", "transformer_small")),
    ("resnet50-cpu", ("resnet50",)),
])
def test_readme_benchmark_blocks_are_the_current_harness_output(section, workloads):
    """Written by `python -m benchmarks --readme docs/benchmarks.md [--section ...]`: header, tables in the
    harness's current columns, targets (a change of the columns fails here until the blocks are rerun)."""
    block = _bench_block((DOCS / "benchmarks.md").read_text(), section)
    lines = block.splitlines()
    assert lines[0].startswith("Measured ") and "torch " in lines[0] and "pytorch_optimizer " in lines[0]
    # the committed blocks record the harness's module path when they were measured (sam_plugins.bench)
    assert lines[1].startswith(("Command: `python -m benchmarks", "Command: `python -m sam_plugins.bench"))
    header = workload_table([Result("base", "base", times=[1.0]), Result("sam", "ours", times=[1.0])])[0]
    for workload in workloads:
        assert f"**{workload}** (batch" in block
    assert block.count(header) == len(workloads)
    assert "**Targets**" in block and "| target | measured | limit | |" in block


def test_readme_toy2d_lines_are_what_the_demo_prints():
    from benchmarks.blocks import block
    from examples.demo import toy_lines, toy_paths

    readme = (DOCS / "results.md").read_text()
    lines = ["```", "2D test function (XSAM paper App. D.1) -> out/demo/toy2d.png", *toy_lines(toy_paths()), "```"]
    assert block(readme, "demo:toy2d") == "\n".join(lines) + "\n"


def test_readme_generalization_block_and_docs_are_rendered_from_the_committed_runs():
    """The docs page's block, configurations.md and the sensitivity figure's data, from runs.csv and meta.json."""
    import json

    from benchmarks import generalization as g
    from benchmarks.blocks import block

    folder = DOCS / "generalization"
    meta = json.loads((folder / "meta.json").read_text())
    rows = g.read_runs(folder / "runs.csv")
    assert block((DOCS / "generalization.md").read_text(), g.BLOCK) == g.render(rows, meta)
    assert (folder / "results.md").read_text() == g.render(rows, meta)
    assert (folder / "configurations.md").read_text() == g.configurations(rows)
    assert json.loads((folder / "sensitivity.json").read_text()) == json.loads(json.dumps(g.sensitivity(rows, meta)))


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _relative_links() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return [(page.relative_to(ROOT).as_posix(), target) for page in pages
            for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
            if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize(("page", "target"), _relative_links())
def test_relative_links_of_the_readme_and_docs_resolve(page, target):
    path, _, anchor = target.partition("#")
    resolved = (ROOT / page).parent / path if path else ROOT / page
    assert resolved.exists(), f"{page} links to {target}, which does not exist"
    if anchor:
        assert anchor in _anchors(resolved), f"{page} links to {target}: no such heading"


def test_readme_pytorch_example_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(code for code in blocks if "sam_plugins.create" in code)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5 and all(line.startswith(f"epoch {i}: loss ") for i, line in enumerate(printed))
