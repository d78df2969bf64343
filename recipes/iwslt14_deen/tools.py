"""Small steps of the IWSLT14 De-En recipes that are clearer in Python than in shell.

A standalone script (it imports neither fairseq nor this project, so it starts fast):
``tools.py lower`` lowercases stdin to stdout; ``clean SRC TGT OUT_SRC OUT_TGT``
drops pairs with an empty side, more than 175 tokens, or a length ratio above 1.5 (the standard
IWSLT14 filter); ``bleu GEN_OUT OUT_JSON`` reads fairseq-generate's output and writes its BLEU
and sacreBLEU; ``collect RUNS`` prints the table over seeds beside the paper's numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

PAPER = {"sam": "35.30 ± 0.04", "xsam": "35.63 ± 0.12"}


def lower() -> None:
    for line in sys.stdin:
        sys.stdout.write(line.lower())


def clean(src: Path, tgt: Path, out_src: Path, out_tgt: Path, max_len: int = 175, ratio: float = 1.5) -> int:
    kept = 0
    with src.open() as fs, tgt.open() as ft, out_src.open("w") as os_, out_tgt.open("w") as ot:
        for a, b in zip(fs, ft):
            na, nb = len(a.split()), len(b.split())
            if 0 < na <= max_len and 0 < nb <= max_len and max(na, nb) <= ratio * min(na, nb):
                os_.write(a)
                ot.write(b)
                kept += 1
    return kept


def bleu(gen_out: Path, out_json: Path) -> dict[str, float]:
    """fairseq-generate's BLEU on tokenized text (how IWSLT14 results are reported) and sacreBLEU on
    Moses-detokenized text."""
    import sacrebleu
    from sacremoses import MosesDetokenizer

    detok = MosesDetokenizer(lang="en").detokenize

    text = gen_out.read_text()
    fairseq_bleu = re.search(r"BLEU4? = ([\d.]+)", text)
    hyps, refs = {}, {}
    for line in text.splitlines():
        if line.startswith("H-"):
            key, _, hyp = line.split("\t", 2)
            hyps[int(key[2:])] = hyp
        elif line.startswith("T-"):
            key, ref = line.split("\t", 1)
            refs[int(key[2:])] = ref
    order = sorted(refs)
    sacre = sacrebleu.corpus_bleu([detok(hyps.get(i, "").split()) for i in order],
                                  [[detok(refs[i].split()) for i in order]])
    scores = {"bleu": float(fairseq_bleu.group(1)) if fairseq_bleu else float("nan"), "sacrebleu": sacre.score,
              "sentences": len(order)}
    out_json.write_text(json.dumps(scores) + "\n")
    return scores


def collect(runs: Path) -> str:
    """Markdown table: one row per optimizer, mean ± std over ``RUNS/<optimizer>/seed*/bleu.json``."""
    lines = ["| optimizer | seeds | BLEU (mean ± std) | sacreBLEU | paper (Table 3) |", "|---|---|---|---|---|"]
    for directory in sorted(p for p in runs.iterdir() if p.is_dir()):
        scores = [json.loads(f.read_text()) for f in sorted(directory.glob("seed*/bleu.json"))]
        if not scores:
            continue
        cells = []
        for key in ("bleu", "sacrebleu"):
            values = [s[key] for s in scores]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {std:.2f}")
        lines.append(f"| {directory.name} | {len(scores)} | {cells[0]} | {cells[1]} | "
                     f"{PAPER.get(directory.name, '–')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="helpers of recipes/iwslt14_deen")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lower")
    c = sub.add_parser("clean")
    for name in ("src", "tgt", "out_src", "out_tgt"):
        c.add_argument(name, type=Path)
    b = sub.add_parser("bleu")
    b.add_argument("gen_out", type=Path)
    b.add_argument("out_json", type=Path)
    k = sub.add_parser("collect")
    k.add_argument("runs", type=Path)
    args = parser.parse_args(argv)
    if args.command == "lower":
        lower()
    elif args.command == "clean":
        print(f"kept {clean(args.src, args.tgt, args.out_src, args.out_tgt)} pairs", file=sys.stderr)
    elif args.command == "bleu":
        print(json.dumps(bleu(args.gen_out, args.out_json)))
    else:
        print(collect(args.runs))


if __name__ == "__main__":
    main()
