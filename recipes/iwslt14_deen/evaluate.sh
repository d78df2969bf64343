#!/usr/bin/env bash
# Translate the test set (beam 5, BPE removed) and score it: fairseq's BLEU on the tokenized,
# lowercased text (how IWSLT14 results, the paper's included, are reported) and sacreBLEU on
# Moses-detokenized text. Writes OUT_DIR/generate.out and OUT_DIR/bleu.json.
#
#   evaluate.sh [--cpu] CHECKPOINT DATA_BIN OUT_DIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

device=()
if [ "${1:-}" = --cpu ]; then device=(--cpu); shift; fi
[ $# -eq 3 ] || die "usage: evaluate.sh [--cpu] CHECKPOINT DATA_BIN OUT_DIR"
checkpoint=$1 data=$2 out=$3
mkdir -p "$out"
"$BIN/fairseq-generate" "$data" --user-dir "$USER_DIR" --path "$checkpoint" --gen-subset test --beam 5 \
  --remove-bpe --batch-size 128 "${device[@]}" > "$out/generate.out"
"$PY" "$RECIPE_DIR/tools.py" bleu "$out/generate.out" "$out/bleu.json"
