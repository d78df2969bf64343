"""The README's hyperparameter tables are the declarations' own."""

from __future__ import annotations

from pathlib import Path

from sam_plugins.describe import markdown


def test_readme_hyperparameter_tables_match_the_declarations():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("<!-- hyperparameters:begin -->\n", 1)[1].split("<!-- hyperparameters:end -->", 1)[0]
    assert block.strip() == markdown().strip()
