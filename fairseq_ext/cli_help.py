"""``fairseq-train DATA --optimizer xsam --help`` lists the optimizer's flags.

fairseq parses the command line twice, adding the flags of the chosen task, model and optimizer
before the second parse, but ``--help`` is acted on in the first parse, so optimizer flags never
show. With the plugin loaded, ``--help`` is held back until every stage has added its flags (without
``--arch`` fairseq adds none; the optimizer's are added all the same).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from fairseq import options

HELP = ("-h", "--help")


def add_optimizer_flags(parser: Any, argv: list[str]) -> None:
    """The chosen --optimizer's flags, which need no --arch (nothing when the command line cannot be parsed)."""
    from fairseq.dataclass.utils import gen_parser_from_dataclass
    from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY

    try:
        known, _ = parser.parse_known_args(argv)
    except SystemExit:
        return
    config = OPTIMIZER_DATACLASS_REGISTRY.get(getattr(known, "optimizer", None))
    if config is not None:
        gen_parser_from_dataclass(parser, config())


def show_full_help() -> None:
    """Wrap ``options.parse_args_and_arch`` (idempotent)."""
    original = options.parse_args_and_arch
    if getattr(original, "_sam_plugins", False):
        return

    @functools.wraps(original)
    def parse_args_and_arch(parser: Any, input_args: Any = None, *args: Any, **kwargs: Any) -> Any:
        argv = sys.argv[1:] if input_args is None else list(input_args)
        if not any(a in HELP for a in argv):
            return original(parser, input_args, *args, **kwargs)
        stripped = [a for a in argv if a not in HELP]
        try:
            original(parser, stripped, *args, **{**kwargs, "parse_known": True})
        except (SystemExit, RuntimeError):  # no (or an unknown) --arch: fairseq stops before adding any stage's flags
            add_optimizer_flags(parser, stripped)
        parser.print_help()
        sys.exit(0)

    parse_args_and_arch._sam_plugins = True  # type: ignore[attr-defined]
    options.parse_args_and_arch = parse_args_and_arch
