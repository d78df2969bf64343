"""Generated README blocks: the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` is a command's output."""

from __future__ import annotations

from pathlib import Path


def markers(readme: Path, name: str) -> tuple[str, str]:
    """The block's markers; fails naming them if ``readme`` lacks either."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{readme} has no {begin} ... {end} block to replace")
    return begin, end


def block(text: str, name: str) -> str:
    """The current content of block ``name`` in ``text``."""
    return text.split(f"<!-- {name}:begin -->\n", 1)[1].split(f"<!-- {name}:end -->", 1)[0]


def splice(readme: Path, content: str, name: str) -> None:
    """Replace block ``name`` of ``readme`` with ``content``."""
    begin, end = markers(readme, name)
    head, rest = readme.read_text().split(begin, 1)
    readme.write_text(f"{head}{begin}\n{content}{end}{rest.split(end, 1)[1]}")
