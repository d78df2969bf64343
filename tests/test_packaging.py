"""The wheel holds the library only: the benchmark harness and the examples run from the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = CONFIG["tool"]["setuptools"]


def installed_modules() -> set[str]:
    """Every module the wheel would hold, as dotted names: the packages pyproject's find selects and their files."""
    find = SETUPTOOLS["packages"]["find"]
    packages = find_packages(str(ROOT), include=find.get("include", ("*",)), exclude=find.get("exclude", ()))
    return {f"{package}.{path.stem}" for package in packages
            for path in (ROOT / package.replace(".", "/")).glob("*.py")}


def test_the_wheel_holds_no_benchmark_or_example_module():
    modules = installed_modules()
    assert {"sam_plugins.engine", "fairseq_ext.optimizer", "timm_ext.train", "sam_plugins.describe"} <= modules
    outside = {path.stem for folder in ("benchmarks", "examples") for path in (ROOT / folder).glob("*.py")}
    outside -= {"__init__", "__main__"}
    assert {"demo", "toy2d", "digits", "corpus", "generalization", "workloads"} <= outside
    shipped = sorted(m for m in modules
                     if m.split(".")[0] in ("benchmarks", "examples") or m.rsplit(".", 1)[1] in outside
                     or any(part in ("bench", "benchmarks", "examples") for part in m.split(".")))
    assert shipped == []


def test_the_version_has_one_source_and_the_type_marker_ships():
    assert "version" not in CONFIG["project"] and "version" in CONFIG["project"]["dynamic"]
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "sam_plugins.__version__"}
    assert "py.typed" in SETUPTOOLS["package-data"]["sam_plugins"] and (ROOT / "sam_plugins" / "py.typed").is_file()
