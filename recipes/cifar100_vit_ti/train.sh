#!/usr/bin/env bash
# ViT-Ti on CIFAR-100 with the XSAM paper's Table 9 settings: 300 epochs, batch 256, AdamW lr 1e-3
# betas (0.9, 0.999), weight decay 0.3, label smoothing 0.1, no Cutout, cosine schedule; ViT-Ti with
# 4-pixel patches on the 32-pixel images (timm's --img-size does not reach the model, hence
# --model-kwargs); SAM ρ 0.9; XSAM ρ 0.9, ρ_m 0.9.
#
#   train.sh --optimizer base|sam|xsam [--seed N] [--gpus G] [--tiny] DATA_DIR OUT [timm_ext.train flags]
# DATA_DIR receives torch/cifar100 (downloaded on first use). The batch per GPU is 256 / all GPUs
# (BATCH overrides). --tiny: CPU smoke run on a small ImageFolder (the digits) with a 4-pixel-patch
# timm test ViT. DRY_RUN=1 prints the command instead of running it.
# shellcheck source=../lib/timm.sh
source "$(dirname "$0")/../lib/timm.sh"
BASE_OPT=adamw SAM_BASE=adamw GLOBAL_BATCH=256
SAM_ARGS=(--sam-rho 0.9)
XSAM_ARGS=(--sam-rho 0.9 --sam-rho-m 0.9)
PAPER_ARGS=(--dataset torch/cifar100 --dataset-download --val-split test --model vit_tiny_patch16_224
  --model-kwargs img_size=32 patch_size=4 --img-size 32 --num-classes 100 --epochs 300 --lr 1e-3
  --opt-betas 0.9 0.999 --weight-decay 0.3 --smoothing 0.1 --sched cosine --mean 0.5071 0.4865 0.4409
  --std 0.2673 0.2564 0.2762 --amp -j 8 --pin-mem)
TINY_ARGS=(--dataset "" --model test_vit --model-kwargs img_size=16 patch_size=4 --num-classes 10 --img-size 16
  --epochs 1 -b 64 --lr 1e-3 --opt-betas 0.9 0.999 --weight-decay 0.3 --smoothing 0.1 --warmup-epochs 0
  --no-aug -j 0 --log-interval 100)
timm_recipe "$@"
