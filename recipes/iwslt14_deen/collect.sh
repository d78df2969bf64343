#!/usr/bin/env bash
# The results table: mean ± std over seeds of RUNS/<optimizer>/seed<N>/bleu.json beside the paper's
# Table 3 (SAM 35.30 ± 0.04, XSAM 35.63 ± 0.12). Prints Markdown; also writes RUNS/results.md.
#
#   collect.sh RUNS
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

[ $# -eq 1 ] || die "usage: collect.sh RUNS"
"$PY" "$RECIPE_DIR/tools.py" collect "$1" | tee "$1/results.md"
