"""timm_ext.train's command line against timm train.py's own option list (tests/data/timm_train_options.json):
every timm option is run or refused with a reason, defaults agree, -c configs behave as in timm."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timm
ROOT = Path(__file__).resolve().parent.parent
TIMM_OPTIONS = json.loads((ROOT / "tests" / "data" / "timm_train_options.json").read_text())["options"]
# Defaults that differ from timm's on purpose: timm's 'cuda' fails on a machine without CUDA.
OWN_DEFAULTS = {"device"}


def flags():
    from timm_ext.training import flags

    return flags


def parse_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        flags().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def partition():
    """timm's options split into the ones this script runs and the ones it refuses."""
    parser = flags().build_parser()
    refused = {option for refusal in flags().REFUSED for option in refusal.options}
    ours = {s for action in parser._actions for s in action.option_strings} - refused
    ours |= {"data", "-c", "--config"}  # the positional, and the pre-parser's option
    accepted = [row for row in TIMM_OPTIONS if set(row["options"]) <= ours]
    refused_rows = [row for row in TIMM_OPTIONS if set(row["options"]) <= refused]
    return accepted, refused_rows


def test_every_timm_option_is_run_or_refused_with_a_reason_and_the_readme_counts_them():
    accepted, refused = partition()
    neither = [row["options"] for row in TIMM_OPTIONS if row not in accepted and row not in refused]
    assert neither == []
    assert all(len(refusal.reason) > 30 for refusal in flags().REFUSED)
    readme = (ROOT / "docs" / "timm.md").read_text()
    assert (f"{len(accepted)} of timm train.py's {len(TIMM_OPTIONS)} options run here, the other {len(refused)} are "
            "refused") in readme


def test_accepted_options_keep_timms_defaults_and_a_timm_default_config_runs_as_is(tmp_path):
    """What timm's args.yaml holds for a default run: every destination at timm's default, refused ones included."""
    accepted, refused = partition()
    config = {row["dest"]: row["default"] for row in accepted + refused if row["dest"] not in ("config", "data")}
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(config))
    args, _ = flags().parse_args(["-c", str(path)])
    plain, _ = flags().parse_args([])
    differing = {row["dest"]: (getattr(plain, row["dest"]), row["default"]) for row in accepted
                 if row["dest"] not in OWN_DEFAULTS | {"config"} and getattr(plain, row["dest"]) != row["default"]}
    assert differing == {}
    assert {k: getattr(args, k) for k in config} == {k: v for k, v in config.items()}


def test_config_values_are_defaults_and_the_command_line_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"lr": 0.3, "batch_size": 16, "opt": "xsam", "sam_rho": 0.2}))
    args, text = flags().parse_args(["-c", str(path), "--lr", "0.5"])
    assert (args.lr, args.batch_size, args.opt, args.sam_rho) == (0.5, 16, "xsam", 0.2)
    assert yaml.safe_load(text)["lr"] == 0.5 and "config" not in yaml.safe_load(text)


def test_config_keys_this_script_cannot_run_are_listed_in_one_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"naflex_loader": True, "kd_model_name": "vit_base", "naflex_max_seq_len": 576,
                                    "lr_bas": 0.2, "lr": 0.1}))
    with pytest.raises(SystemExit) as exit_info:
        flags().parse_args(["-c", str(path)])
    message = str(exit_info.value)
    assert "3 key(s)" in message
    assert re.search(r"naflex_loader: True: timm's NaFlex", message)
    assert re.search(r"kd_model_name: 'vit_base': knowledge distillation", message)
    assert "lr_bas: not an option of timm's train.py nor of this script (did you mean lr_base?)" in message
    assert "naflex_max_seq_len" not in message  # timm's default: asks for nothing


def test_refused_and_unknown_options_are_named_in_one_error(capsys):
    err = parse_error(capsys, ["--naflex-loader", "--kd-model-name", "vit_base", "--sam-rhoo", "0.1"])
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert "--naflex-loader: a timm train.py option this script does not run: timm's NaFlex" in lines[0]
    assert "--kd-model-name: a timm train.py option this script does not run: knowledge distillation" in lines[1]
    assert "--sam-rhoo: not an option of timm's train.py nor of this script (did you mean --sam-rho" in lines[2]


@pytest.mark.parametrize(("argv", "message"), [
    (["--aug-splits", "1"], "--aug-splits 1 is invalid; allowed: 0 (off) or >= 2"),
    (["--jsd-loss"], "--jsd-loss needs --aug-splits >= 2"),
    (["--aug-splits", "2", "--no-prefetcher"], "--aug-splits needs timm's prefetcher"),
    (["--aug-splits", "2", "--mixup", "0.2"], "cannot be combined with --mixup"),
    (["--split-bn"], "--split-bn needs --aug-splits >= 2 or --resplit"),
    (["--train-num-samples", "100"], "--train-num-samples applies to iterable datasets (hfids/, tfds/, wds/…) only"),
    (["--epoch-repeats", "2"], "--epoch-repeats applies to iterable datasets"),
    (["--amp", "--model-dtype", "bfloat16"], "timm requires a float32 model under AMP"),
    (["--resume", "auto"], "--resume auto needs --experiment NAME"),
    (["--wandb-resume-id", "abc"], "--wandb-resume-id needs --resume"),
    (["--val-interval", "0"], "--val-interval 0 is invalid; allowed: an int >= 1"),
    (["--val-interval", "2", "--save-epochs", "3"], "multiples of --val-interval 2"),
    (["--stop-epoch", "0"], "--stop-epoch 0 is invalid"),
])
def test_combinations_timm_rejects_or_ignores_fail_before_anything_is_built(argv, message):
    args, _ = flags().parse_args(argv)
    with pytest.raises(SystemExit, match=re.escape(message)):
        flags().check_args(args)


def test_log_wandb_without_wandb_is_refused():
    pytest.importorskip("timm")
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed")
    except ImportError:
        pass
    args, _ = flags().parse_args(["--log-wandb"])
    with pytest.raises(SystemExit, match=re.escape("--log-wandb: the wandb package is not installed")):
        flags().check_args(args)


def test_args_text_is_the_parsed_namespace():
    args, text = flags().parse_args(["--opt", "xsam", "--opt-kwargs", "base=adamw", "--sam-rho-m", "0.3"])
    assert argparse.Namespace(**yaml.safe_load(text)) == args
