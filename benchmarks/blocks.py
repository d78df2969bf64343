"""Generated Markdown blocks: the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` is a command's
output."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def host() -> str:
    """The machine as the generated blocks name it: CPU model and core count."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores"


def markers(path: Path, name: str) -> tuple[str, str]:
    """The block's markers; fails naming them if ``path`` lacks either."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} block to replace")
    return begin, end


def block(text: str, name: str) -> str:
    """The current content of block ``name`` in ``text``."""
    return text.split(f"<!-- {name}:begin -->\n", 1)[1].split(f"<!-- {name}:end -->", 1)[0]


def splice(path: Path, content: str, name: str) -> None:
    """Replace block ``name`` of ``path`` with ``content``."""
    begin, end = markers(path, name)
    head, rest = path.read_text().split(begin, 1)
    path.write_text(f"{head}{begin}\n{content}{end}{rest.split(end, 1)[1]}")
