"""Datasets, loaders, Mixup/CutMix and the train loss, built as timm's train.py builds them (prefetcher on unless
``--no-prefetcher``, AugMix splits, repeated augmentation, BCE/JSD losses)."""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import torch
from timm.data import AugMixDataset, FastCollateMixup, Mixup, create_dataset, create_loader
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn


class Data(NamedTuple):
    train: Any
    eval: Any  # None when --val-split is empty
    mixup: Mixup | None  # batch-level Mixup; with the prefetcher it happens in the loader's collate instead
    train_loss: nn.Module


def _dataset(args: argparse.Namespace, split: str, training: bool, image_mode: str) -> Any:
    return create_dataset(
        args.dataset, root=args.data_dir or args.data, split=split, is_training=training, class_map=args.class_map,
        download=args.dataset_download, batch_size=args.batch_size, seed=args.seed,
        repeats=args.epoch_repeats if training else 0, input_img_mode=image_mode, input_key=args.input_key,
        target_key=args.target_key, num_samples=args.train_num_samples if training else args.val_num_samples,
        trust_remote_code=args.dataset_trust_remote_code)


def _train_loss(args: argparse.Namespace, mixup_active: bool, aug_splits: int) -> nn.Module:
    """timm's choice: JSD for AugMix splits; with Mixup soft targets (BCE or soft CE; smoothing is in the targets);
    else label smoothing (BCE or CE); else plain cross-entropy."""
    bce = dict(target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum, pos_weight=args.bce_pos_weight)
    if args.jsd_loss:
        return JsdCrossEntropy(num_splits=aug_splits, smoothing=args.smoothing)
    if mixup_active:
        return BinaryCrossEntropy(**bce) if args.bce_loss else SoftTargetCrossEntropy()
    if args.smoothing:
        if args.bce_loss:
            return BinaryCrossEntropy(smoothing=args.smoothing, **bce)
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return nn.CrossEntropyLoss()


def build_data(args: argparse.Namespace, data_config: dict, distributed: bool, device: torch.device,
               model_dtype: torch.dtype | None) -> Data:
    image_mode = args.input_img_mode or ("RGB" if data_config["input_size"][0] == 3 else "L")
    aug_splits = args.aug_splits if args.aug_splits > 1 else 0
    prefetcher = not args.no_prefetcher
    common = dict(mean=data_config["mean"], std=data_config["std"], pin_memory=args.pin_mem,
                  img_dtype=model_dtype or torch.float32, device=device, distributed=distributed,
                  use_prefetcher=prefetcher)
    mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    mixup, collate = None, None
    if mixup_active:
        mixup_args = dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                          prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                          label_smoothing=args.smoothing, num_classes=args.num_classes)
        if prefetcher:
            collate = FastCollateMixup(**mixup_args)
        else:
            mixup = Mixup(**mixup_args)
    dataset_train = _dataset(args, args.train_split, True, image_mode)
    if aug_splits:
        dataset_train = AugMixDataset(dataset_train, num_splits=aug_splits)
    train_interpolation = args.train_interpolation
    if args.no_aug or not train_interpolation:
        train_interpolation = data_config["interpolation"]
    loader_train = create_loader(
        dataset_train, input_size=data_config["input_size"], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, re_split=args.resplit,
        train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip,
        color_jitter=args.color_jitter, color_jitter_prob=args.color_jitter_prob, grayscale_prob=args.grayscale_prob,
        gaussian_blur_prob=args.gaussian_blur_prob, auto_augment=args.aa, num_aug_repeats=args.aug_repeats,
        num_aug_splits=aug_splits, interpolation=train_interpolation, num_workers=args.workers,
        worker_seeding=args.worker_seeding, collate_fn=collate, use_multi_epochs_loader=args.use_multi_epochs_loader,
        **common)
    loader_eval = None
    if args.val_split:
        workers = args.workers
        if distributed and ("tfds" in args.dataset or "wds" in args.dataset):
            workers = min(2, args.workers)  # as timm: less padding of sharded iterable datasets
        loader_eval = create_loader(
            _dataset(args, args.val_split, False, image_mode), input_size=data_config["input_size"],
            batch_size=args.validation_batch_size or args.batch_size, is_training=False,
            interpolation=data_config["interpolation"], num_workers=workers, crop_pct=data_config["crop_pct"],
            **common)
    return Data(loader_train, loader_eval, mixup, _train_loss(args, mixup_active, aug_splits).to(device))
