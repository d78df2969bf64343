# shellcheck shell=bash
# Shared launcher of the timm recipes: option parsing, single process / torchrun, tiny mode.
# A recipe sets PAPER_ARGS (its Table 9 settings), GLOBAL_BATCH (the paper's batch over all GPUs),
# BASE_OPT (the plain optimizer), SAM_BASE (the base's timm name), SAM_ARGS and XSAM_ARGS, TINY_ARGS,
# then calls `timm_recipe "$@"`. The batch per GPU is GLOBAL_BATCH / (gpus × NNODES); BATCH overrides it.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# timm_recipe --optimizer base|sam|xsam [--seed N] [--gpus G] [--tiny] DATA OUT [timm_ext.train flags...]
# Runs OUT/<optimizer>/seed<N> (summary.csv, checkpoints, train.log). With NNODES > 1 (set by
# slurm.sbatch) it joins a multi-node torchrun rendezvous at RDZV_ENDPOINT. DRY_RUN=1 prints the
# command instead of running it.
timm_recipe() {
  parse_run_options "$@"
  local optimizer=$OPTIMIZER seed=$SEED gpus=$GPUS tiny=$TINY
  set -- "${REST[@]}"
  [ $# -ge 2 ] || die "usage: $(basename "$0") --optimizer base|sam|xsam [--seed N] [--gpus G] [--tiny] DATA OUT"
  local data=$1 out=$2
  shift 2
  local method=()
  case "$optimizer" in
    base) method=(--opt "$BASE_OPT") ;;
    sam) method=(--opt sam --opt-kwargs "base=$SAM_BASE" "${SAM_ARGS[@]}") ;;
    xsam) method=(--opt xsam --opt-kwargs "base=$SAM_BASE" "${XSAM_ARGS[@]}") ;;
    *) die "--optimizer must be one of base, sam, xsam (got '$optimizer')" ;;
  esac
  local settings=("${PAPER_ARGS[@]}")
  if [ "$tiny" = 1 ]; then
    settings=("${TINY_ARGS[@]}")
  else
    local replicas=$((gpus * ${NNODES:-1}))
    [ $((GLOBAL_BATCH % replicas)) = 0 ] || [ -n "${BATCH:-}" ] ||
      die "the global batch $GLOBAL_BATCH does not split over $replicas GPUs; set BATCH (per GPU)"
    settings+=(-b "${BATCH:-$((GLOBAL_BATCH / replicas))}")
  fi
  local run=(--data-dir "$data" "${settings[@]}" "${method[@]}" --seed "$seed" --output "$out/$optimizer"
             --experiment "seed$seed" "$@")
  local launch=("$PY")
  if [ "${NNODES:-1}" -gt 1 ]; then
    launch=("$BIN/torchrun" --nnodes "$NNODES" --nproc_per_node "$gpus" --rdzv_backend c10d
      --rdzv_endpoint "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port}" --rdzv_id "${RDZV_ID:-sam}")
  elif [ "$gpus" -gt 1 ]; then
    launch=("$BIN/torchrun" --nproc_per_node "$gpus")
  fi
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "${launch[@]}" -m timm_ext.train "${run[@]}"
    echo
    return
  fi
  mkdir -p "$out/$optimizer/seed$seed"
  "${launch[@]}" -m timm_ext.train "${run[@]}" 2>&1 | tee "$out/$optimizer/seed$seed/train.log"
}
