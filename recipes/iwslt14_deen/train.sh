#!/usr/bin/env bash
# Train the IWSLT14 De-En transformer with the XSAM paper's Table 9 settings.
#
#   train.sh --optimizer adam|sam|xsam [--seed N] [--gpus G] [--tiny] DATA_BIN SAVE_DIR [fairseq args...]
#
# adam is the plain AdamW baseline; sam and xsam use it as their base. Settings: transformer_iwslt_de_en,
# AdamW lr 5e-4 betas (0.9, 0.98) weight decay 0.3 (override: WEIGHT_DECAY), inverse_sqrt with 4000
# warmup updates, label smoothing 0.1, dropout 0.3, 4096 tokens per GPU, 300 epochs (override: EPOCHS),
# fp16; SAM ρ 0.15, XSAM ρ 0.15 and ρ_m 0.45 (probing on each epoch's first update).
# --gpus G uses the first G visible GPUs of this node (fairseq starts one process per GPU); across
# nodes, submit slurm.sbatch. --tiny: a few CPU updates of a tiny model, for the tests.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

parse_run_options "$@"
optimizer=$OPTIMIZER seed=$SEED gpus=$GPUS tiny=$TINY
set -- "${REST[@]}"
[ $# -ge 2 ] || die "usage: train.sh --optimizer adam|sam|xsam [--seed N] [--gpus G] [--tiny] DATA_BIN SAVE_DIR"
data=$1 save=$2
shift 2

case "$optimizer" in
  adam) method=(--optimizer adam) ;;
  sam) method=(--optimizer sam --sam-base adam --sam-rho 0.15) ;;
  xsam) method=(--optimizer xsam --sam-base adam --sam-rho 0.15 --sam-rho-m 0.45) ;;
  *) die "--optimizer must be one of adam, sam, xsam (got '$optimizer')" ;;
esac

common=(--user-dir "$USER_DIR" --task translation --seed "$seed" --save-dir "$save"
  --adam-betas '(0.9, 0.98)' --weight-decay "${WEIGHT_DECAY:-0.3}" --lr 5e-4 --lr-scheduler inverse_sqrt
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --log-format simple --log-interval 100
  --no-progress-bar --no-epoch-checkpoints)
if [ "$tiny" = 1 ]; then
  setting=(--arch transformer --share-all-embeddings --encoder-layers 1 --decoder-layers 1
    --encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64
    --encoder-attention-heads 2 --decoder-attention-heads 2 --warmup-updates 2 --max-tokens 1000
    --max-update "${MAX_UPDATE:-6}" --cpu --num-workers 0)
else
  setting=(--arch transformer_iwslt_de_en --share-decoder-input-output-embed --dropout 0.3
    --warmup-updates 4000 --max-tokens 4096 --max-epoch "${EPOCHS:-300}" --fp16)
  if [ "$gpus" -gt 1 ]; then
    setting+=(--distributed-world-size "$gpus")
    CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1)))
    export CUDA_VISIBLE_DEVICES
  fi
fi
mkdir -p "$save"
"$BIN/fairseq-train" "$data" "${common[@]}" "${setting[@]}" "${method[@]}" "$@" 2>&1 | tee -a "$save/train.log"
