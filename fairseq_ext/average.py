"""Average the weights of fairseq checkpoints: ``python -m fairseq_ext.average``.

fairseq's ``scripts/average_checkpoints.py`` is not installed with the fairseq package, and on
torch ≥ 2.6 its plain ``torch.load`` refuses every fairseq checkpoint (they hold configs, not only
tensors). This one takes the same flags and reads through fairseq's loader with the plugin's allowed
classes. The output is the first input with its ``model`` weights replaced by the mean.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from fairseq import checkpoint_utils

from .checkpoints import allow_fairseq_checkpoints

PATTERNS = {"epoch": re.compile(r"checkpoint(\d+)\.pt"), "update": re.compile(r"checkpoint_\d+_(\d+)\.pt")}


def last_checkpoints(directory: Path, count: int, kind: str, upper_bound: int | None = None) -> list[Path]:
    """The ``count`` newest epoch (``checkpointE.pt``) or update (``checkpoint_E_U.pt``) checkpoints."""
    matches = ((PATTERNS[kind].fullmatch(path.name), path) for path in directory.iterdir())
    numbered = [(int(m.group(1)), path) for m, path in matches
                if m and (upper_bound is None or int(m.group(1)) <= upper_bound)]
    if len(numbered) < count:
        raise ValueError(f"--num-{kind}-checkpoints {count}: only {len(numbered)} {kind} checkpoints in {directory}"
                         + (f" up to {upper_bound}" if upper_bound is not None else ""))
    return [path for _, path in sorted(numbered, reverse=True)[:count]]


def average_checkpoints(paths: list[Path]) -> dict:
    """The first checkpoint with each model tensor replaced by the mean over all (summed in float64)."""
    allow_fairseq_checkpoints()
    first = checkpoint_utils.load_checkpoint_to_cpu(str(paths[0]))
    sums = {k: v.to(torch.float64) for k, v in first["model"].items()}
    for path in paths[1:]:
        model = checkpoint_utils.load_checkpoint_to_cpu(str(path))["model"]
        if model.keys() != sums.keys():
            raise ValueError(f"{path} holds other parameters than {paths[0]}: "
                             f"{sorted(model.keys() ^ sums.keys())[:5]}")
        for k, v in model.items():
            sums[k] += v.to(torch.float64)
    first["model"] = {k: (sums[k] / len(paths)).to(v.dtype) for k, v in first["model"].items()}
    return first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", required=True, type=Path,
                        help="checkpoint files, or one directory with --num-epoch/update-checkpoints")
    parser.add_argument("--output", required=True, type=Path, help="where to write the averaged checkpoint")
    newest = parser.add_mutually_exclusive_group()
    newest.add_argument("--num-epoch-checkpoints", type=int, help="average the newest N checkpointE.pt")
    newest.add_argument("--num-update-checkpoints", type=int, help="average the newest N checkpoint_E_U.pt")
    parser.add_argument("--checkpoint-upper-bound", type=int, help="newest epoch/update number to consider")
    args = parser.parse_args(argv)
    count = args.num_epoch_checkpoints or args.num_update_checkpoints
    if count is not None:
        if len(args.inputs) != 1 or not args.inputs[0].is_dir():
            parser.error("--num-epoch/update-checkpoints needs --inputs to be one directory")
        kind = "epoch" if args.num_epoch_checkpoints else "update"
        try:
            paths = last_checkpoints(args.inputs[0], count, kind, args.checkpoint_upper_bound)
        except ValueError as err:
            parser.error(str(err))
    else:
        paths = list(args.inputs)
    print("averaging " + " ".join(str(p) for p in paths))
    torch.save(average_checkpoints(paths), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
