"""The command line of ``timm_ext.train``: timm ``train.py``'s options with its defaults, ``-c`` YAML configs, the
``--sam-*`` flags generated from the core declarations, and one table of the timm options refused, with reasons."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from timm.optim import list_optimizers
from timm.utils import ParseKwargs

import sam_plugins
from sam_plugins import Hyper, SharpnessAware

ITERABLE_DATASETS = ("hfids/", "tfds/", "wds/")  # timm passes num_samples and repeats to these only


class Refusal(NamedTuple):
    """A timm train.py option this script does not run: its option strings, timm's default, and why."""

    options: tuple[str, ...]
    default: Any
    reason: str


_SCHEDULED = "timm's scheduled-resolution batch sampler is not supported by this script"
_NAFLEX = "timm's NaFlex variable-resolution loader is not supported by this script"
_DISTILL = "knowledge distillation (timm's distillation tasks) is not supported by this script"
REFUSED: tuple[Refusal, ...] = (
    Refusal(("--torchscript",), False, "TorchScript models are not supported here; --torchcompile compiles instead"),
    Refusal(("--drop-connect",), None, "deprecated in timm, whose train.py accepts and ignores it; use --drop-path"),
    Refusal(("--train-img-sizes",), None, _SCHEDULED),
    Refusal(("--train-batch-sizes",), None, _SCHEDULED),
    Refusal(("--train-size-probs",), None, _SCHEDULED),
    Refusal(("--train-size-schedule",), "constant", _SCHEDULED),
    Refusal(("--train-size-schedule-spread",), 0.65, _SCHEDULED),
    Refusal(("--train-size-random-mix",), 0.1, _SCHEDULED),
    Refusal(("--train-batches-per-epoch", "--train-steps-per-epoch"), None, _SCHEDULED),
    Refusal(("--variable-batch-loss-scale",), "none", _SCHEDULED),
    Refusal(("--naflex-loader",), False, _NAFLEX),
    Refusal(("--naflex-train-seq-lens",), [128, 256, 576, 784, 1024], _NAFLEX),
    Refusal(("--naflex-max-seq-len",), 576, _NAFLEX),
    Refusal(("--naflex-patch-sizes",), None, _NAFLEX),
    Refusal(("--naflex-patch-size-probs",), None, _NAFLEX),
    Refusal(("--naflex-loss-scale",), "linear", _NAFLEX),
    Refusal(("--naflex-patchify-channels-first",), False, _NAFLEX),
    Refusal(("--kd-model-name",), None, _DISTILL),
    Refusal(("--kd-distill-type",), "logit", _DISTILL),
    Refusal(("--kd-loss-type",), "kl", _DISTILL),
    Refusal(("--distill-loss-weight",), None, _DISTILL),
    Refusal(("--task-loss-weight",), None, _DISTILL),
    Refusal(("--kd-temperature",), 4.0, _DISTILL),
    Refusal(("--kd-student-feature-dim",), None, _DISTILL),
    Refusal(("--kd-teacher-feature-dim",), None, _DISTILL),
    Refusal(("--kd-token-distill-type",), "soft", _DISTILL),
)


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


class _Refuse(argparse.Action):
    """Records a refused option given on the command line; ``parse_args`` reports all of them in one error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.refused_options = [*getattr(namespace, "refused_options", []), option_string]


def sam_flags() -> dict[str, Hyper]:
    """Every hyperparameter declared by any variant, by flag destination (``sam_<name>``)."""
    flags: dict[str, Hyper] = {}
    for name in sam_plugins.available():
        for h in sam_plugins.get(name).hyperparameters:
            flags.setdefault(h.name, h)
    return flags


def build_parser() -> argparse.ArgumentParser:
    """timm train.py's options (names, types, defaults) that this script runs, the --sam-* flags, and the refused
    options (kept so ``--help`` and config checks know them)."""
    p = argparse.ArgumentParser(description="timm training with sharpness-aware optimizers")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, metavar="FILE",
                   help="YAML of option values used as defaults; the command line wins (as timm's -c)")
    p.add_argument("data", nargs="?", metavar="DIR", help="path to dataset (positional is deprecated, use --data-dir)")
    g = p.add_argument_group("Dataset")
    g.add_argument("--data-dir", metavar="DIR")
    g.add_argument("--dataset", "-d", default="", help="'' or 'folder' for an ImageFolder, torch/cifar100…")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="validation", help="'' trains without evaluation")
    g.add_argument("--train-num-samples", type=int, default=None, help="samples per epoch (iterable datasets)")
    g.add_argument("--val-num-samples", type=int, default=None, help="eval samples (iterable datasets)")
    g.add_argument("--dataset-download", action="store_true", default=False)
    g.add_argument("--class-map", default="", type=str, help="file mapping class names to indices")
    g.add_argument("--input-img-mode", default=None, type=str, help="PIL mode images are loaded in (default: "
                   "RGB for 3 input channels, L otherwise)")
    g.add_argument("--input-key", default=None, type=str)
    g.add_argument("--target-key", default=None, type=str)
    g.add_argument("--dataset-trust-remote-code", action="store_true", default=False)
    g = p.add_argument_group("Model")
    g.add_argument("--model", default="resnet50", type=str)
    g.add_argument("--pretrained", action="store_true", default=False)
    g.add_argument("--pretrained-path", default=None, type=str, help="pretrained weights file; the head is adapted")
    g.add_argument("--initial-checkpoint", default="", type=str, help="load these weights into the model first")
    g.add_argument("--resume", default="", type=str, help="checkpoint to resume from; 'auto': the run's last.pth.tar "
                   "if there is one (needs --experiment)")
    g.add_argument("--no-resume-opt", action="store_true", default=False)
    g.add_argument("--num-classes", type=int, default=None)
    g.add_argument("--gp", default=None, type=str, help="global pool type")
    g.add_argument("--img-size", type=int, default=None)
    g.add_argument("--in-chans", type=int, default=None)
    g.add_argument("--input-size", default=None, nargs=3, type=int)
    g.add_argument("--crop-pct", default=None, type=float)
    g.add_argument("--mean", type=float, nargs="+", default=None)
    g.add_argument("--std", type=float, nargs="+", default=None)
    g.add_argument("--interpolation", default="", type=str)
    g.add_argument("-b", "--batch-size", type=int, default=128)
    g.add_argument("-vb", "--validation-batch-size", type=int, default=None)
    g.add_argument("--channels-last", action="store_true", default=False)
    g.add_argument("--fuser", default="", type=str, help="TorchScript fuser (timm.utils.set_jit_fuser)")
    g.add_argument("--grad-accum-steps", type=int, default=1)
    g.add_argument("--grad-checkpointing", action="store_true", default=False)
    g.add_argument("--fast-norm", action="store_true", default=False)
    g.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs)
    g.add_argument("--head-init-scale", default=None, type=float)
    g.add_argument("--head-init-bias", default=None, type=float)
    g.add_argument("--torchcompile-mode", type=str, default=None)
    g.add_argument("--torchcompile", nargs="?", type=str, default=None, const="inductor")
    g = p.add_argument_group("Device and distributed")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=str)
    g.add_argument("--amp", action="store_true", default=False)
    g.add_argument("--amp-dtype", default="float16", choices=("float16", "bfloat16"))
    g.add_argument("--model-dtype", default=None, type=str, choices=("float32", "float16", "bfloat16"))
    g.add_argument("--no-ddp-bb", action="store_true", default=False, help="DDP without buffer broadcast")
    g.add_argument("--synchronize-step", action="store_true", default=False)
    g.add_argument("--local_rank", default=0, type=int)
    g.add_argument("--device-modules", default=None, type=str, nargs="+", help="modules imported first")
    g = p.add_argument_group("Optimizer")
    g.add_argument("--opt", default="sgd", type=str)
    g.add_argument("--opt-eps", default=None, type=float)
    g.add_argument("--opt-betas", default=None, type=float, nargs="+")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=2e-5)
    g.add_argument("--clip-grad", type=float, default=None)
    g.add_argument("--clip-mode", default="norm", choices=("norm", "value", "agc"))
    g.add_argument("--layer-decay", type=float, default=None)
    g.add_argument("--layer-decay-min-scale", type=float, default=0)
    g.add_argument("--layer-decay-no-opt-scale", type=float, default=None)
    g.add_argument("--opt-kwargs", nargs="*", default={}, action=ParseKwargs)
    g = p.add_argument_group("Sharpness-aware (generated from sam_plugins' declarations)")
    for name, h in sam_flags().items():
        if h.kind is bool:
            flag = f"--sam-no-{name}" if h.default else f"--sam-{name}"
            g.add_argument(flag.replace("_", "-"), dest=f"sam_{name}", action="store_const",
                           const=not h.default, default=None, help=h.help)
        else:
            g.add_argument(f"--sam-{name}".replace("_", "-"), dest=f"sam_{name}", type=h.kind, default=None,
                           choices=h.choices, help=f"{h.help} ({h.allowed()})")
    g.add_argument("--sam-local-ascent", action="store_true", default=False,
                   help="per-replica ascent under DDP (m-sharpness); the final direction is averaged once")
    g = p.add_argument_group("Learning rate schedule")
    g.add_argument("--sched", default="cosine", type=str)
    g.add_argument("--sched-on-updates", action="store_true", default=False)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--lr-base", type=float, default=0.1)
    g.add_argument("--lr-base-size", type=int, default=256)
    g.add_argument("--lr-base-scale", default="", choices=("", "linear", "sqrt"))
    g.add_argument("--lr-noise", type=float, nargs="+", default=None)
    g.add_argument("--lr-noise-pct", type=float, default=0.67)
    g.add_argument("--lr-noise-std", type=float, default=1.0)
    g.add_argument("--lr-cycle-mul", type=float, default=1.0)
    g.add_argument("--lr-cycle-decay", type=float, default=0.5)
    g.add_argument("--lr-cycle-limit", type=int, default=1)
    g.add_argument("--lr-k-decay", type=float, default=1.0)
    g.add_argument("--warmup-lr", type=float, default=1e-5)
    g.add_argument("--min-lr", type=float, default=0)
    g.add_argument("--epochs", type=int, default=300)
    g.add_argument("--epoch-repeats", type=float, default=0.0, help="dataset repeats per epoch (iterable datasets)")
    g.add_argument("--start-epoch", default=None, type=int)
    g.add_argument("--stop-epoch", default=None, type=int,
                   help="end after this many epochs; the schedule still spans --epochs")
    g.add_argument("--save-epochs", default=None, type=int, nargs="+",
                   help="after these epoch counts keep a milestone-N.pth.tar that is never evicted")
    g.add_argument("--decay-milestones", default=[90, 180, 270], type=int, nargs="+")
    g.add_argument("--decay-epochs", type=float, default=90)
    g.add_argument("--warmup-epochs", type=int, default=5)
    g.add_argument("--warmup-prefix", action="store_true", default=False)
    g.add_argument("--cooldown-epochs", type=int, default=0)
    g.add_argument("--patience-epochs", type=int, default=10)
    g.add_argument("--decay-rate", "--dr", type=float, default=0.1)
    g = p.add_argument_group("Augmentation and regularization")
    g.add_argument("--no-aug", action="store_true", default=False)
    g.add_argument("--train-crop-mode", type=str, default=None)
    g.add_argument("--scale", type=float, nargs="+", default=[0.08, 1.0])
    g.add_argument("--ratio", type=float, nargs="+", default=[3.0 / 4.0, 4.0 / 3.0])
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--vflip", type=float, default=0.0)
    g.add_argument("--color-jitter", type=float, default=0.4)
    g.add_argument("--color-jitter-prob", type=float, default=None)
    g.add_argument("--grayscale-prob", type=float, default=None)
    g.add_argument("--gaussian-blur-prob", type=float, default=None)
    g.add_argument("--aa", type=str, default=None)
    g.add_argument("--aug-repeats", type=float, default=0, help="repeated augmentation (distributed only)")
    g.add_argument("--aug-splits", type=int, default=0, help="AugMix splits (needs the prefetcher)")
    g.add_argument("--jsd-loss", action="store_true", default=False, help="Jensen-Shannon loss with --aug-splits")
    g.add_argument("--bce-loss", action="store_true", default=False)
    g.add_argument("--bce-sum", action="store_true", default=False)
    g.add_argument("--bce-target-thresh", type=float, default=None)
    g.add_argument("--bce-pos-weight", type=float, default=None)
    g.add_argument("--reprob", type=float, default=0.0)
    g.add_argument("--remode", type=str, default="pixel")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--resplit", action="store_true", default=False)
    g.add_argument("--mixup", type=float, default=0.0)
    g.add_argument("--cutmix", type=float, default=0.0)
    g.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    g.add_argument("--mixup-prob", type=float, default=1.0)
    g.add_argument("--mixup-switch-prob", type=float, default=0.5)
    g.add_argument("--mixup-mode", type=str, default="batch")
    g.add_argument("--mixup-off-epoch", default=0, type=int)
    g.add_argument("--smoothing", type=float, default=0.1)
    g.add_argument("--train-interpolation", type=str, default="random")
    g.add_argument("--drop", type=float, default=0.0)
    g.add_argument("--drop-path", type=float, default=None)
    g.add_argument("--drop-block", type=float, default=None)
    g = p.add_argument_group("Batch norm")
    g.add_argument("--bn-momentum", type=float, default=None)
    g.add_argument("--bn-eps", type=float, default=None)
    g.add_argument("--sync-bn", action="store_true", default=False)
    g.add_argument("--dist-bn", type=str, default="reduce", choices=("reduce", "broadcast", ""),
                   help="after each epoch under DDP, average ('reduce') or copy rank 0's ('broadcast') BN statistics")
    g.add_argument("--split-bn", action="store_true", default=False)
    g = p.add_argument_group("Model EMA")
    g.add_argument("--model-ema", action="store_true", default=False)
    g.add_argument("--model-ema-force-cpu", action="store_true", default=False,
                   help="keep the EMA on the CPU (then, as in timm, it is not evaluated)")
    g.add_argument("--model-ema-decay", type=float, default=0.9998)
    g.add_argument("--model-ema-warmup", action="store_true", default=False)
    g = p.add_argument_group("Miscellaneous")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--worker-seeding", type=str, default="all")
    g.add_argument("--log-interval", type=int, default=50)
    g.add_argument("--val-interval", type=int, default=1, help="evaluate and checkpoint every N epochs (and last)")
    g.add_argument("--recovery-interval", type=int, default=0, help="recovery checkpoint every N updates")
    g.add_argument("--checkpoint-hist", type=int, default=10)
    g.add_argument("-j", "--workers", type=int, default=4)
    g.add_argument("--save-images", action="store_true", default=False)
    g.add_argument("--pin-mem", action="store_true", default=False)
    g.add_argument("--no-prefetcher", action="store_true", default=False)
    g.add_argument("--output", default="", type=str, help="output root (default: ./output/train)")
    g.add_argument("--experiment", default="", type=str, help="run directory name (default: date-model-size)")
    g.add_argument("--eval-metric", default="top1", type=str)
    g.add_argument("--tta", type=int, default=0, help="average the outputs of N consecutive eval samples")
    g.add_argument("--use-multi-epochs-loader", action="store_true", default=False)
    g.add_argument("--log-wandb", action="store_true", default=False)
    g.add_argument("--wandb-project", default=None, type=str)
    g.add_argument("--wandb-tags", default=[], type=str, nargs="+")
    g.add_argument("--wandb-resume-id", default="", type=str)
    refused = ", ".join(refusal.options[0] for refusal in REFUSED)
    g = p.add_argument_group("timm train.py options refused here", f"each says why when given: {refused}")
    for refusal in REFUSED:
        g.add_argument(*refusal.options, dest=_dest(refusal.options[0]), action=_Refuse, nargs="*",
                       default=refusal.default, help=argparse.SUPPRESS)
    return p


def _refusal_line(option: str) -> str:
    for refusal in REFUSED:
        if option in refusal.options:
            return f"{option}: a timm train.py option this script does not run: {refusal.reason}"
    raise KeyError(option)


def _unknown_line(option: str, parser: argparse.ArgumentParser) -> str:
    known = [s for action in parser._actions for s in action.option_strings]
    near = difflib.get_close_matches(option.split("=")[0], known, n=3)
    return (f"{option}: not an option of timm's train.py nor of this script"
            + (f" (did you mean {', '.join(near)}?)" if near else ""))


def check_config(config: dict, parser: argparse.ArgumentParser, path: str) -> None:
    """A ``-c`` YAML's keys must be option destinations this script runs; a refused option may appear only at timm's
    default (every timm-written args.yaml lists them all). Every offending key is named in one error."""
    dests = {action.dest for action in parser._actions}
    refused = {_dest(r.options[0]): r for r in REFUSED}
    problems = []
    for key, value in config.items():
        if key in refused and value != refused[key].default:
            problems.append(f"  {key}: {value!r}: {refused[key].reason}")
        elif key not in dests:
            near = difflib.get_close_matches(key, sorted(dests), n=1)
            problems.append(f"  {key}: not an option of timm's train.py nor of this script"
                            + (f" (did you mean {near[0]}?)" if near else ""))
    if problems:
        raise SystemExit(f"-c {path}: {len(problems)} key(s) this script cannot run:\n" + "\n".join(problems))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, str]:
    """timm's two-stage parse: ``-c FILE.yaml`` values become defaults and the command line wins. Returns the args and
    their YAML text (taken before anything is derived, as timm writes args.yaml)."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("-c", "--config", default="", type=str, metavar="FILE")
    config_args, remaining = config_parser.parse_known_args(argv)
    parser = build_parser()
    if config_args.config:
        path = Path(config_args.config)
        if not path.is_file():
            raise SystemExit(f"-c {path}: no such file")
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            raise SystemExit(f"-c {path}: expected a YAML mapping of option names to values")
        check_config(config, parser, str(path))
        parser.set_defaults(**config)
    args, unknown = parser.parse_known_args(remaining)
    refused = getattr(args, "refused_options", [])
    problems = [_refusal_line(option) for option in refused]
    problems += [_unknown_line(option, parser) for option in unknown if option.startswith("-")]
    if unknown and not problems:  # values after an unknown option belong to it; alone they are stray
        problems.append(f"unexpected argument(s) {unknown}")
    if problems:
        parser.exit(2, "\n".join(f"{parser.prog}: error: {line}" for line in problems) + "\n")
    return args, yaml.safe_dump(vars(args), default_flow_style=False)


def sam_kwargs(args: argparse.Namespace, variant: type[SharpnessAware]) -> dict[str, Any]:
    """The variant's hyperparameters given as --sam-* flags (unset flags keep the declared defaults)."""
    declared = {h.name for h in variant.hyperparameters}
    given = {name: getattr(args, f"sam_{name}") for name in sam_flags() if getattr(args, f"sam_{name}") is not None}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise SystemExit(f"--opt {variant.name} has no hyperparameter(s) {unknown}; it declares {sorted(declared)}")
    return given


def _check_optimizer(args: argparse.Namespace) -> type[SharpnessAware] | None:
    parts = args.opt.lower().split("_")
    if len(parts) > 1 and parts[-1] in sam_plugins.available() and parts[:-1] != ["lookahead"]:
        raise SystemExit(f"--opt {args.opt}: timm's only optimizer wrapper is lookahead_ (it forwards the closure); "
                         f"use --opt {parts[-1]} or --opt lookahead_{parts[-1]}")
    known = list_optimizers()
    if parts[-1] not in known:
        near = difflib.get_close_matches(parts[-1], known, n=3)
        raise SystemExit(f"--opt {args.opt}: unknown optimizer {parts[-1]!r}"
                         + (f"; did you mean {', '.join(near)}?" if near else "; see timm.optim.list_optimizers()"))
    variant = sam_plugins.get(parts[-1]) if parts[-1] in sam_plugins.available() else None
    if variant is None and any(getattr(args, f"sam_{n}") is not None for n in sam_flags()):
        raise SystemExit(f"--sam-* flags need a sharpness-aware --opt (one of {sam_plugins.available()})")
    if variant is not None and args.clip_grad is not None and args.clip_mode != "norm":
        raise SystemExit(f"--clip-mode {args.clip_mode} is not supported with --opt {args.opt}: the final direction "
                         "is clipped by norm (--clip-mode norm)")
    return variant


def _at_least(args: argparse.Namespace, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise SystemExit(f"--{name.replace('_', '-')} {value} is invalid; allowed: an int >= {minimum}")


def check_args(args: argparse.Namespace) -> type[SharpnessAware] | None:
    """Every combination timm rejects (or would quietly ignore) fails here, before anything is built, with the
    reason. Returns the variant class for SAM optimizers."""
    variant = _check_optimizer(args)
    _at_least(args, 1, "grad_accum_steps", "val_interval", "stop_epoch", "epochs")
    _at_least(args, 0, "tta", "recovery_interval", "aug_splits")
    if args.save_epochs is not None and any(n < 1 or n % args.val_interval for n in args.save_epochs):
        raise SystemExit(f"--save-epochs {args.save_epochs}: allowed: epoch counts >= 1 that are multiples of "
                         f"--val-interval {args.val_interval} (checkpoints are written on evaluated epochs)")
    iterable = args.dataset.startswith(ITERABLE_DATASETS)
    for name in ("train_num_samples", "val_num_samples", "epoch_repeats"):
        if getattr(args, name) and not iterable:
            raise SystemExit(f"--{name.replace('_', '-')} applies to iterable datasets ({', '.join(ITERABLE_DATASETS)}"
                             f"…) only; timm ignores it for --dataset {args.dataset!r}")
    if args.aug_splits == 1:
        raise SystemExit("--aug-splits 1 is invalid; allowed: 0 (off) or >= 2 (timm: a split of 1 makes no sense)")
    if args.aug_splits > 1 and args.no_prefetcher:
        raise SystemExit("--aug-splits needs timm's prefetcher (its collate interleaves the splits); drop "
                         "--no-prefetcher")
    if args.aug_splits > 1 and (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None):
        raise SystemExit("--aug-splits cannot be combined with --mixup/--cutmix (timm's collate cannot do both)")
    if args.jsd_loss and args.aug_splits < 2:
        raise SystemExit("--jsd-loss needs --aug-splits >= 2 (the loss compares the splits)")
    if args.split_bn and args.aug_splits < 2 and not args.resplit:
        raise SystemExit("--split-bn needs --aug-splits >= 2 or --resplit")
    if args.split_bn and args.sync_bn:
        raise SystemExit("--split-bn cannot be combined with --sync-bn")
    if args.amp and args.model_dtype not in (None, "float32"):
        raise SystemExit(f"--model-dtype {args.model_dtype} with --amp: timm requires a float32 model under AMP")
    if args.resume == "auto" and not args.experiment:
        raise SystemExit("--resume auto needs --experiment NAME: without it the run directory is named by the date")
    if args.wandb_resume_id and not args.resume:
        raise SystemExit("--wandb-resume-id needs --resume (it continues a run)")
    if args.log_wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise SystemExit("--log-wandb: the wandb package is not installed (pip install wandb)") from None
    return variant
