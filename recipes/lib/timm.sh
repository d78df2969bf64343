# shellcheck shell=bash
# Shared launcher of the timm recipes: option parsing, single process / torchrun, tiny mode.
# A recipe sets PAPER_ARGS (its Table 9 settings), BASE_OPT (the plain optimizer), SAM_BASE (the base's
# timm name), SAM_ARGS and XSAM_ARGS, TINY_ARGS, then calls `timm_recipe "$@"`.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# timm_recipe --optimizer base|sam|xsam [--seed N] [--gpus G] [--tiny] DATA OUT [timm_ext.train flags...]
# Runs OUT/<optimizer>/seed<N> (summary.csv, checkpoints, train.log). With NNODES > 1 (set by
# slurm.sbatch) it joins a multi-node torchrun rendezvous at RDZV_ENDPOINT.
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
  if [ "$tiny" = 1 ]; then settings=("${TINY_ARGS[@]}"); fi
  local run=(--data-dir "$data" "${settings[@]}" "${method[@]}" --seed "$seed" --output "$out/$optimizer"
             --experiment "seed$seed" "$@")
  mkdir -p "$out/$optimizer/seed$seed"
  if [ "${NNODES:-1}" -gt 1 ]; then
    "$BIN/torchrun" --nnodes "$NNODES" --nproc_per_node "$gpus" --rdzv_backend c10d \
      --rdzv_endpoint "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port}" --rdzv_id "${RDZV_ID:-sam}" \
      -m timm_ext.train "${run[@]}"
  elif [ "$gpus" -gt 1 ]; then
    "$BIN/torchrun" --nproc_per_node "$gpus" -m timm_ext.train "${run[@]}"
  else
    "$PY" -m timm_ext.train "${run[@]}"
  fi 2>&1 | tee "$out/$optimizer/seed$seed/train.log"
}
