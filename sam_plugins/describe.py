"""Print the hyperparameters of every variant, from their declarations, as Markdown tables.

``python -m sam_plugins.describe`` writes the tables docs/variants.md shows, so the documented defaults
and ranges are the declared ones (a test checks that the page holds them).
"""

from __future__ import annotations

from .hyper import COMMON, Hyper
from .registry import available, get


def _row(first: str, h: Hyper) -> str:
    cells = [first, f"`{h.name}`", f"`{h.default!r}`", h.allowed(), "yes" if h.per_group else "", h.help]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown() -> str:
    lines = ["Common to every variant:", "", "| | hyperparameter | default | allowed | per group | meaning |",
             "|---|---|---|---|---|---|"]
    lines += [_row("all", h) for h in COMMON]
    lines += ["", "Specific to a variant, or with a variant's own default:", "",
              "| variant | hyperparameter | default | allowed | per group | meaning |", "|---|---|---|---|---|---|"]
    for name in available():
        lines += [_row(f"`{name}`", h) for h in get(name).hyperparameters if h not in COMMON]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
