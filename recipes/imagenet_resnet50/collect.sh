#!/usr/bin/env bash
# The results table over seeds (final and best top-1, mean ± std) beside the paper's Table 3.
#
#   collect.sh OUT        (OUT as given to train.sh; also writes OUT/results.md)
# shellcheck source=../lib/timm.sh
source "$(dirname "$0")/../lib/timm.sh"
[ $# -eq 1 ] || die "usage: collect.sh OUT"
"$PY" "$LIB_DIR/collect_timm.py" "$1" imagenet_resnet50 | tee "$1/results.md"
