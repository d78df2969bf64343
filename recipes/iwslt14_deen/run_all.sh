#!/usr/bin/env bash
# The whole experiment on one node: prepare, then adam / sam / xsam for each seed, evaluate, collect.
#
#   run_all.sh [--tiny] [--gpus G] [--seeds "1 2 3"] WORK_DIR
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

tiny=() gpus=1 seeds="1 2 3" cpu=()
while [ $# -gt 1 ]; do
  case "$1" in
    --tiny) tiny=(--tiny); cpu=(--cpu); shift ;;
    --gpus) gpus=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    *) die "unknown option $1 (allowed: --tiny, --gpus G, --seeds LIST)" ;;
  esac
done
[ $# -eq 1 ] || die "usage: run_all.sh [--tiny] [--gpus G] [--seeds LIST] WORK_DIR"
work=$1
"$RECIPE_DIR/prepare.sh" "${tiny[@]}" "$work/data"
for optimizer in adam sam xsam; do
  for seed in $seeds; do
    run=$work/runs/$optimizer/seed$seed
    "$RECIPE_DIR/train.sh" --optimizer "$optimizer" --seed "$seed" --gpus "$gpus" "${tiny[@]}" \
      "$work/data/data-bin" "$run" > /dev/null
    "$RECIPE_DIR/evaluate.sh" "${cpu[@]}" "$run/checkpoint_last.pt" "$work/data/data-bin" "$run"
  done
done
"$RECIPE_DIR/collect.sh" "$work/runs"
