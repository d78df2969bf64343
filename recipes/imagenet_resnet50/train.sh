#!/usr/bin/env bash
# ResNet-50 on ImageNet with the XSAM paper's Table 9 settings: 90 epochs, global batch 512, SGD with
# momentum 0.9 (timm's `momentum`), lr 0.2, weight decay 1e-4, no label smoothing, cosine schedule
# (timm's default 5 warmup epochs), AMP; SAM ρ 0.05; XSAM ρ 0.05, ρ_m 0.3.
#
#   train.sh --optimizer base|sam|xsam [--seed N] [--gpus G] [--tiny] IMAGENET_DIR OUT [timm_ext.train flags]
# IMAGENET_DIR holds train/ and val/ class folders. The batch per GPU is 512 / all GPUs (BATCH overrides).
# --gpus G runs torchrun on this node; slurm.sbatch runs several nodes. --tiny: CPU smoke run on a
# small ImageFolder (the digits) with timm's test_resnet. DRY_RUN=1 prints the command instead of running it.
# shellcheck source=../lib/timm.sh
source "$(dirname "$0")/../lib/timm.sh"
BASE_OPT=momentum SAM_BASE=momentum GLOBAL_BATCH=512
SAM_ARGS=(--sam-rho 0.05)
XSAM_ARGS=(--sam-rho 0.05 --sam-rho-m 0.3)
PAPER_ARGS=(--dataset "" --val-split val --model resnet50 --epochs 90 --lr 0.2
  --momentum 0.9 --weight-decay 1e-4 --smoothing 0 --sched cosine --amp -j 8 --pin-mem)
TINY_ARGS=(--dataset "" --model test_resnet --num-classes 10 --img-size 16 --epochs 1 -b 64 --lr 0.05
  --weight-decay 1e-4 --smoothing 0 --warmup-epochs 0 --no-aug -j 0 --log-interval 100)
timm_recipe "$@"
