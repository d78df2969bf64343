"""timm_ext.train end to end on the digits ImageFolder (timm's real dataset, loader and scheduler)."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_equal_nested, free_port

import sam_plugins

pytestmark = pytest.mark.timm
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from examples.digits import write_digits

    out = tmp_path_factory.mktemp("digits")
    write_digits(out, size=16)
    return out


@pytest.fixture(scope="module")
def digits60(tmp_path_factory):
    """6 images per class: a 60-image epoch is one update of -b 60 (or 2 replicas × 30)."""
    from examples.digits import write_digits

    out = tmp_path_factory.mktemp("digits60")
    write_digits(out, size=16, per_class=6)
    return out


def train_argv(digits, out, *args, aug=False):
    return ["--data-dir", str(digits), "--dataset", "", "--num-classes", "10", "--img-size", "16", "-b", "64",
            "--workers", "0", "--warmup-epochs", "0", *([] if aug else ["--no-aug"]), "--log-interval", "100",
            "--output", str(out), "--experiment", "run", *args]


def train(digits, out, *args, check=True, aug=False, launcher=(sys.executable,)):
    argv = train_argv(digits, out, *args, aug=aug)
    result = run_with_tracebacks_on_timeout([*launcher, "-m", "timm_ext.train", *argv])
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-2000:] + result.stderr[-4000:])
    return result


def run_with_tracebacks_on_timeout(command, timeout=300):
    """Run a command; past ``timeout``, SIGABRT it and every process below it (torchrun starts its workers in
    sessions of their own) so each Python process prints where its threads are stuck, and fail with that output."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stuck = [*descendants(process.pid), process.pid]
        signal_all(stuck, signal.SIGABRT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        finally:
            signal_all(stuck, signal.SIGKILL)
        raise AssertionError(f"timed out after {timeout} s: {command}\n{stdout[-3000:]}\n{stderr[-20000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def descendants(pid):
    """Every live process below ``pid``, read from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def signal_all(pids, signum):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def summary(out):
    with open(out / "run" / "summary.csv") as f:
        return list(csv.DictReader(f))


def weights(out, name="last.pth.tar"):
    return load(out / "run" / name)


def load(path):
    with torch.serialization.safe_globals([argparse.Namespace]):  # timm checkpoints carry the run's args
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def digits200(tmp_path_factory):
    from examples.digits import write_digits

    out = tmp_path_factory.mktemp("digits200")
    write_digits(out, size=16, per_class=20)
    return out


@pytest.mark.parametrize("name", sam_plugins.available())
def test_every_variant_trains_an_epoch(digits200, tmp_path, name):
    """In this process (the command line's own main): the other tests run the command itself."""
    import timm_ext.train as entry

    entry.main(train_argv(digits200, tmp_path, "--model", "test_resnet", "--epochs", "1", "--opt", name,
                          "--lr", "0.05", "--opt-kwargs", "base=momentum", "--sam-rho", "0.05"))
    rows = summary(tmp_path)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["eval_loss"])) and float(rows[0]["eval_top1"]) >= 0
    state = weights(tmp_path)["optimizer"]["sam"]
    assert state["variant"] == name and state["counters"]["updates"] == 200 // 64


def test_xsam_beats_chance_and_logs_alpha(digits, tmp_path):
    result = train(digits, tmp_path, "--model", "test_resnet", "--epochs", "3", "--opt", "xsam", "--lr", "0.05",
                   "--sam-rho", "0.1", "--opt-kwargs", "base=momentum")
    rows = summary(tmp_path)
    assert float(rows[-1]["eval_top1"]) > 60
    assert "alpha" in result.stdout + result.stderr and "train_alpha" in rows[0]


# What timm's own train.py wrote for these command lines (the shared part is TIMM_COMMON), recorded once on
# 2026-12-03: huggingface/pytorch-image-models at aa4b5850, its train.py unmodified, run from a directory outside
# this project against the pinned timm 1.0.31 and torch 2.11.0 on this project's machine kind (AMD EPYC, 2 cores),
# on the digits folders of the fixtures below. Recorded: its summary.csv rows and a sha256 prefix of
# last.pth.tar's weights (fingerprint() below). Bitwise values: another CPU kind may round differently.
TIMM_COMMON = ["--dataset", "", "--num-classes", "10", "--img-size", "16", "-b", "64", "--device", "cpu", "--seed",
               "42", "--model", "test_resnet", "--epochs", "2", "--log-interval", "100", "--experiment", "run"]
TIMM_TRAIN_PY = {
    "sgd-cosine": (
        "digits", ["--opt", "sgd", "--momentum", "0.9", "--lr", "0.05", "--sched", "cosine", "--workers", "0"],
        ["0,2.3577687306837602,2.3105405012766522,11.38888888888889,52.5,1e-05",
         "1,2.2295710390264336,2.036319438616435,23.333333333333332,79.16666666666667,0.010008"],
        {"state_dict": "b011d0249ce32d42"}),
    "adamw-ema-smoothing-2-workers": (
        "digits", ["--opt", "adamw", "--model-ema", "--smoothing", "0.1", "--workers", "2"],
        ["0,2.3411270921880547,2.3036451074812145,11.666666666666666,51.111111111111114,1e-05",
         "1,2.127139514142817,2.3035645061069063,11.666666666666666,53.611111111111114,0.010008"],
        {"state_dict": "26f5f6b80206e13e", "state_dict_ema": "66b4c401d07c8848"}),
    "lookahead-adahessian-partial-accumulation": (  # 8 batches of 24 in updates of 3, 3 and 2
        "digits200", ["--opt", "lookahead_adahessian", "--lr", "0.1", "-b", "24", "--grad-accum-steps", "3",
                      "--workers", "0"],
        ["0,2.3401946499943733,2.3061396408081056,10.000000305175782,58.99999946594238,1e-05",
         "1,2.372949495911598,2.3004442501068114,10.500000286102296,54.50000015258789,0.020008"],
        {"state_dict": "52492f268022db3c"}),
}


def fingerprint(state):
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("case", TIMM_TRAIN_PY)
def test_a_fresh_plain_run_is_timms_train_py_run(request, tmp_path, case):
    """Same command line, same seed: the same weights (and EMA) to the bit and the same summary rows as timm's
    train.py, whose end-of-run lines this script prints too: '*** Best metric' and the '--result' JSON. Run as a
    fresh process, as timm's was: torch's thread count (here 2) and other process state change the last bits."""
    fixture, args, rows, prints = TIMM_TRAIN_PY[case]
    result = command("--data-dir", str(request.getfixturevalue(fixture)), *TIMM_COMMON, "--output", str(tmp_path),
                     *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "summary.csv").read_text().splitlines()[1:] == rows
    checkpoint = weights(tmp_path)
    assert {key: fingerprint(checkpoint[key]) for key in prints} == prints
    best = max(rows, key=lambda row: float(row.split(",")[3]))
    assert f"*** Best metric: {best.split(',')[3]} (epoch {best.split(',')[0]})" in result.stderr
    reported = json.loads(result.stdout.split("--result\n")[1])
    expected = [{"epoch": int(epoch), "train": {"loss": float(train)},
                 "validation": {"loss": float(loss), "top1": float(top1), "top5": float(top5)}}
                for epoch, train, loss, top1, top5, _ in (row.split(",") for row in rows)]
    assert reported == sorted(expected, key=lambda r: r["validation"]["top1"])


def start_and_kill_after_the_first_checkpoint(argv):
    """Start a run and SIGKILL it (with its loader workers) as soon as it reports its first epoch checkpoint."""
    process = subprocess.Popen([sys.executable, "-m", "timm_ext.train", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in process.stderr:
            if line.startswith("Current checkpoints:"):
                break
        else:
            raise AssertionError(f"the run ended (exit {process.wait()}) before writing a checkpoint")
    finally:
        signal_all([*descendants(process.pid), process.pid], signal.SIGKILL)
        process.wait()
    return process.returncode


@pytest.mark.parametrize(("opt", "workers"), [("xsam", "0"), ("sgd", "2")])
def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(digits200, tmp_path, opt, workers):
    """3 epochs; a second run SIGKILLed right after its first checkpoint, then restarted with --resume auto, ends
    bit-identical to the uninterrupted one: weights, EMA, optimizer state and summary rows. The augmentations draw
    from every generator (rand-augment: python's; random erasing: torch's; Mixup/CutMix: numpy's), in this process
    (-j 0) or in 2 persistent loader workers, whose state the checkpoint carries."""
    common = ["--model", "test_resnet", "--opt", opt, "--lr", "0.05", "--epochs", "3", "--model-ema",
              "--model-ema-decay", "0.9", "--mixup", "0.2", "--cutmix", "1.0", "--aa", "rand-m9-mstd0.5",
              "--reprob", "0.25", "--workers", workers, *(["--opt-kwargs", "base=momentum"] if opt == "xsam" else [])]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        straight = pool.submit(train, digits200, tmp_path / "straight", *common, aug=True)
        killed = pool.submit(start_and_kill_after_the_first_checkpoint,
                             train_argv(digits200, tmp_path / "killed", *common, aug=True))
        assert killed.result() == -signal.SIGKILL
        straight.result()
    assert [r["epoch"] for r in summary(tmp_path / "killed")] == ["0"]
    train(digits200, tmp_path / "killed", *common, "--resume", "auto", aug=True)
    assert summary(tmp_path / "killed") == summary(tmp_path / "straight")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    for key in ("state_dict", "state_dict_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert_equal_nested(a["optimizer"], b["optimizer"])


def test_gradient_accumulation_equals_the_large_batch(digits, tmp_path):
    """A LayerNorm model (BatchNorm would see smaller batches): 2 × 32 accumulated = 64."""
    common = ["--model", "test_vit", "--model-kwargs", "img_size=16", "patch_size=4", "--epochs", "1",
              "--opt", "xsam", "--lr", "0.01", "--opt-kwargs", "base=momentum", "--sched", "none"]
    train(digits, tmp_path / "large", *common)
    train(digits, tmp_path / "accum", *common, "-b", "32", "--grad-accum-steps", "2")
    a, b = weights(tmp_path / "large")["state_dict"], weights(tmp_path / "accum")["state_dict"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_runs(digits60, tmp_path):
    train(digits60, tmp_path, "--model", "test_resnet", "--epochs", "1", "--opt", "sam", "--lr", "0.05",
          "--amp", "--amp-dtype", "bfloat16")
    assert float(summary(tmp_path)[0]["eval_loss"]) < 10


@pytest.mark.parametrize(("args", "message"), [
    (["--opt", "fused_xsam"], "timm's only optimizer wrapper is lookahead_ (it forwards the closure)"),
    (["--opt", "xsamm"], "--opt xsamm: unknown optimizer 'xsamm'; did you mean xsam"),
    (["--data-dir", "/nonexistent/digits"], "--data-dir /nonexistent/digits: no such directory"),
    (["--opt", "xsam", "--sam-rho", "0"], "rho=0.0 is invalid; allowed: a float in (0.0, inf)"),
    (["--opt", "sgd", "--sam-rho", "0.1"], "--sam-* flags need a sharpness-aware --opt"),
    (["--opt", "sam", "--sam-rho-m", "0.3"], "--opt sam has no hyperparameter(s) ['rho_m']"),
    (["--opt", "xsam", "--clip-grad", "1", "--clip-mode", "agc"], "--clip-mode agc is not supported"),
    (["--opt", "xsam", "--opt-kwargs", "base=adamm"], "unknown base optimizer 'adamm'; did you mean adam"),
    (["--opt", "xsam", "--opt-kwargs", "base=adahessian"], "base='adahessian' is a second-order optimizer"),
    (["--opt", "xsam", "--sam-grad-scale", "norm"], "invalid choice: 'norm'"),
    (["--opt", "sgd", "--opt-kwargs", "lr=0.5"], "--opt-kwargs lr=0.5: already set by its own flag"),
    (["--opt", "xsam", "--sam-rho", "0.1", "--opt-kwargs", "rho=0.2"], "--opt-kwargs rho=0.2: already set by its own"),
])
def test_bad_flags_fail_fast(digits, tmp_path, capsys, args, message):
    import timm_ext.train as entry

    with pytest.raises(SystemExit) as exit_info:
        entry.main(train_argv(digits, tmp_path, "--model", "test_resnet", "--epochs", "1", *args))
    assert exit_info.value.code not in (0, None)
    assert message in str(exit_info.value.code) + capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def torchrun(processes=2):
    return (str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes),
            "--master_port", str(free_port()))


def test_torchrun_per_replica_ascent_keeps_two_gloo_replicas_identical(digits, tmp_path):
    """Each replica ascends on its own shard (the sampler's), the final direction is averaged: after two epochs
    the replicas still hold the same weights. (Synced ascent: the next test, against one process.)"""
    result = train(digits, tmp_path, "-b", "32", "--epochs", "2", "--model", "test_resnet", "--opt", "xsam",
                   "--lr", "0.05", "--opt-kwargs", "base=momentum", "--sam-local-ascent", launcher=torchrun())
    log = result.stdout + result.stderr
    assert log.count("replica spread 0\n") == 2, log[-3000:]
    assert log.count("Train: ") == 4  # the first and last update of 2 epochs, printed by rank 0 only
    assert float(summary(tmp_path)[-1]["eval_top1"]) > 30


def test_torchrun_equals_one_process_with_the_same_global_batch(digits60, tmp_path):
    """Each epoch is one update over all 60 images, so sample order cannot matter; a LayerNorm model
    without dropout: synced XSAM on 2 × 30 must equal one process on 60 (α* probes included), while
    per-replica ascent is a different method and must not."""
    common = ["--model", "test_vit", "--model-kwargs", "img_size=16", "patch_size=4", "--epochs", "3",
              "--opt", "xsam", "--lr", "0.05", "--opt-kwargs", "base=momentum"]
    train(digits60, tmp_path / "one", *common, "-b", "60")
    two_log = train(digits60, tmp_path / "two", *common, "-b", "30", launcher=torchrun()).stderr
    assert two_log.count("replica spread 0\n") == 3, two_log[-3000:]
    train(digits60, tmp_path / "local", *common, "-b", "30", "--sam-local-ascent", launcher=torchrun())
    one, two, local = (weights(tmp_path / name) for name in ("one", "two", "local"))
    for key in one["state_dict"]:
        torch.testing.assert_close(two["state_dict"][key], one["state_dict"][key], rtol=1e-5, atol=1e-6)
    assert one["optimizer"]["sam"] == two["optimizer"]["sam"]
    assert max(float((local["state_dict"][k] - one["state_dict"][k]).abs().max()) for k in one["state_dict"]) > 1e-4
    for a, b in zip(summary(tmp_path / "one"), summary(tmp_path / "two"), strict=True):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-5)


def test_ddp_is_freed_before_the_process_group_is_destroyed(digits60, tmp_path, monkeypatch):
    """Freed after destroy_process_group, DDP's reducer would destroy the gloo group holding the GIL while gloo's
    worker thread waits for the GIL: the exit deadlock that hung CI. One process in a one-rank gloo group."""
    import weakref

    import torch.distributed as dist

    import timm_ext.train as entry

    def one_rank_group(args):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        return True, 0, 1

    wrappers = []

    class RecordedDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            wrappers.append(weakref.ref(self))

    destroy = dist.destroy_process_group
    alive_at_destroy = []

    def recorded_destroy(*args, **kwargs):
        alive_at_destroy.append(sum(ref() is not None for ref in wrappers))
        destroy(*args, **kwargs)

    monkeypatch.setattr(entry, "setup_distributed", one_rank_group)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordedDDP)
    monkeypatch.setattr(dist, "destroy_process_group", recorded_destroy)
    try:
        entry.main(train_argv(digits60, tmp_path, "--model", "test_resnet", "--epochs", "1", "-b", "60",
                              "--opt", "xsam", "--lr", "0.05"))
    finally:
        if dist.is_initialized():  # a failed run must not leave the group to the tests after this one
            destroy()
    assert len(wrappers) == 1 and alive_at_destroy == [0] and not dist.is_initialized()


def test_loader_workers_and_torch_compile_leave_training_unchanged(digits60, tmp_path):
    """BatchNorm model, one update per epoch. -j 2 loads the same first epoch (later epochs differ in
    sample order: persistent workers leave torch's RNG where a fresh iterator would not). torch.compile
    (aot_eager: dynamo and AOTAutograd, which functionalize the BatchNorm buffer updates the SAM passes
    must undo) gives bit-identical weights after 3 updates."""
    common = ["--model", "test_resnet", "--epochs", "3", "--opt", "xsam", "--lr", "0.05",
              "--opt-kwargs", "base=momentum", "-b", "60"]
    train(digits60, tmp_path / "plain", *common)
    train(digits60, tmp_path / "workers", *common, "--workers", "2")
    train(digits60, tmp_path / "compiled", *common, "--torchcompile", "aot_eager")
    for name, checkpoint in (("workers", "checkpoint-0.pth.tar"), ("compiled", "last.pth.tar")):
        plain, other = (weights(tmp_path / run, checkpoint)["state_dict"] for run in ("plain", name))
        assert list(other) == list(plain), name
        assert all(torch.equal(plain[k], other[k]) for k in plain), name


def test_demo_prints_the_comparison(tmp_path):
    result = subprocess.run([sys.executable, "-m", "examples.timm_demo", "--out", str(tmp_path), "--epochs", "1",
                             "--runs", "sgd", "xsam"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "accuracy.md").read_text().splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["sgd", "xsam"]
    assert all(0 <= float(r.split("|")[2]) <= 100 for r in rows)


def test_ema_steps_once_per_update(digits, tmp_path, monkeypatch):
    """XSAM runs the model ~23 times per update (passes and probes); the EMA must step once."""
    import timm_ext.train as entry

    steps = []

    class CountingEma(entry.ModelEmaV3):
        def update(self, model, step=None):
            steps.append(step)
            super().update(model, step=step)

    monkeypatch.setattr(entry, "ModelEmaV3", CountingEma)
    entry.main(["--data-dir", str(digits), "--dataset", "", "--num-classes", "10", "--img-size", "16", "-b", "64",
                "--output", str(tmp_path),
                "--workers", "0", "--warmup-epochs", "0", "--no-aug", "--model", "test_resnet", "--epochs", "2",
                "--opt", "xsam", "--lr", "0.05", "--model-ema", "--log-interval", "100"])
    assert steps == list(range(1, 2 * (1437 // 64) + 1))


@pytest.mark.parametrize(("args", "lr", "rule"), [
    (["--opt", "sgd", "-b", "32", "--lr-base", "0.4", "--lr-base-size", "64"], 0.4 * 32 / 64, "linear"),
    (["--opt", "xsam", "--opt-kwargs", "base=adamw", "-b", "16", "--grad-accum-steps", "2"], 0.1 * (32 / 256) ** 0.5,
     "sqrt"),
])
def test_without_lr_the_lr_follows_timms_base_rule(digits60, tmp_path, args, lr, rule):
    result = train(digits60, tmp_path, "--model", "test_resnet", "--epochs", "1", *args)
    assert f"lr {lr:g}: --lr-base" in result.stderr and f"({rule})" in result.stderr
    assert float(summary(tmp_path)[0]["lr"]) == pytest.approx(lr)


def test_model_ema_metrics_are_the_eval_metrics_as_in_timm(digits, tmp_path):
    """A near-frozen EMA (decay 0.99999) stays near the initial weights while the model learns: the
    summary, model_best and the plateau metric must follow the EMA, as timm's train.py does."""
    result = train(digits, tmp_path, "--model", "test_resnet", "--epochs", "2", "--opt", "momentum", "--lr", "0.05",
                   "--model-ema", "--model-ema-decay", "0.99999")
    raw = [float(x) for x in re.findall(r"Epoch \d: eval loss \S+  top1 (\S+)", result.stderr)]
    ema = [float(x) for x in re.findall(r"Epoch \d \(EMA\): eval loss \S+  top1 (\S+)", result.stderr)]
    assert len(raw) == len(ema) == 2 and raw[-1] > ema[-1] + 20
    assert [float(r["eval_top1"]) for r in summary(tmp_path)] == pytest.approx(ema, abs=6e-3)
    assert weights(tmp_path, "model_best.pth.tar")["metric"] == pytest.approx(max(ema), abs=6e-3)


def test_empty_val_split_trains_without_evaluation(digits60, tmp_path):
    train(digits60, tmp_path, "--model", "test_resnet", "--epochs", "2", "--opt", "sgd", "--lr", "0.05",
          "--val-split", "")
    rows = summary(tmp_path)
    assert len(rows) == 2 and not any(key.startswith("eval_") for key in rows[0])
    best = weights(tmp_path, "model_best.pth.tar")["metric"]
    assert best == pytest.approx(min(float(r["train_loss"]) for r in rows), rel=1e-6)


def test_one_input_channel_builds_a_one_channel_model_on_grayscale_images(digits60, tmp_path):
    train(digits60, tmp_path, "--model", "test_resnet", "--epochs", "1", "--opt", "sam", "--lr", "0.05",
          "--in-chans", "1", "--mean", "0.5", "--std", "0.25")
    stem = next(v for k, v in weights(tmp_path)["state_dict"].items() if v.dim() == 4)
    assert stem.shape[1] == 1
    assert math.isfinite(float(summary(tmp_path)[0]["eval_loss"]))


def test_fp16_grad_scaler_state_is_checkpointed_and_resumed(digits60, tmp_path):
    """fp16 autocast (CPU here): the GradScaler's state is saved as timm saves it and comes back on
    --resume, so the resumed run ends with the uninterrupted run's weights and scaler."""
    common = ["--model", "test_resnet", "--opt", "xsam", "--lr", "0.05", "--amp", "--amp-dtype", "float16",
              "-b", "30", "--epochs", "3"]
    train(digits60, tmp_path / "straight", *common)
    train(digits60, tmp_path / "resumed", *common, "--resume", str(tmp_path / "straight/run/checkpoint-0.pth.tar"))
    saved = weights(tmp_path / "straight", "checkpoint-0.pth.tar")["amp_scaler"]
    assert saved != torch.amp.GradScaler("cpu").state_dict()  # epoch 0's updates moved it
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a["amp_scaler"] == b["amp_scaler"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_lookahead_over_a_variant_trains_and_resumes_bit_identically(digits60, tmp_path):
    """--opt lookahead_xsam: timm's Lookahead steps XSAM with the closure (the update itself is checked
    against an independent computation in test_param_groups); its slow weights live in the optimizer
    state, so a resumed run ends where the uninterrupted one does."""
    common = ["--model", "test_resnet", "--opt", "lookahead_xsam", "--lr", "0.05", "-b", "30", "--epochs", "3"]
    train(digits60, tmp_path / "straight", *common)
    train(digits60, tmp_path / "resumed", *common, "--resume", str(tmp_path / "straight/run/checkpoint-0.pth.tar"))
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    sam = a["optimizer"]["sam"]
    assert sam["counters"]["updates"] == 6 and all("lookahead_slow_buff" in s for s in sam["state"].values())
    assert all(group["lookahead_step"] == 6 for group in a["optimizer"]["param_groups"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("opt", ["lookahead_momentum", "lookahead_sam"])
def test_lookaheads_epoch_end_sync_changes_no_weight_as_in_timm(digits60, tmp_path, monkeypatch, opt):
    """timm's train.py clears the gradients (to None) right after each step, so the sync_lookahead() it calls at
    each epoch's end skips every parameter; so does this script, for plain optimizers and variants alike."""
    import timm.optim

    import timm_ext.train as entry

    changed = []
    sync = timm.optim.Lookahead.sync_lookahead

    def observed_sync(optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        sync(optimizer)
        changed.append(sum(not torch.equal(b, p) for b, p in zip(before, params)))

    monkeypatch.setattr(timm.optim.Lookahead, "sync_lookahead", observed_sync)
    # 2 updates an epoch: the first sync would only create the slow weights; the second would move the model
    entry.main(train_argv(digits60, tmp_path, "--model", "test_resnet", "--opt", opt, "--lr", "0.05", "-b", "30",
                          "--epochs", "2"))
    assert changed == [0, 0]


def test_adaptive_clipping_of_a_plain_optimizer_leaves_the_head_out_as_timm_does(digits60, tmp_path):
    """One plain-momentum update (no weight decay) with AGC at 0.001: every clipped unit moves at most
    lr · 0.001 · max(‖w_unit‖, 1e-3); the classifier head, which timm excludes, moves further."""
    lr, clip = 0.1, 1e-3
    common = ["--model", "test_resnet", "--epochs", "1", "-b", "60", "--opt", "momentum", "--weight-decay", "0",
              "--sched", "none"]
    train(digits60, tmp_path / "init", *common, "--lr", "1e-12")  # --lr 0 means "unset" to timm
    train(digits60, tmp_path / "agc", *common, "--lr", str(lr), "--clip-grad", str(clip), "--clip-mode", "agc")
    before, after = (weights(tmp_path / name)["state_dict"] for name in ("init", "agc"))

    def excess(key):
        """Largest unit-wise ‖Δw‖ / the AGC bound."""
        w, delta = before[key].flatten(1), (after[key] - before[key]).flatten(1)
        bound = lr * clip * w.norm(dim=1).clamp(min=1e-3)
        return float((delta.norm(dim=1) / bound).max())

    body = [k for k in before if k.endswith(".weight") and before[k].dim() == 4]
    assert body and max(excess(k) for k in body) <= 1 + 1e-3  # float32 rounding
    assert excess("fc.weight") > 2


def command(*args):
    return run_with_tracebacks_on_timeout([sys.executable, "-m", "timm_ext.train", *args])


def test_args_yaml_recreates_the_run_and_resume_auto_finishes_it(digits60, tmp_path):
    """A: 3 epochs, evaluated and checkpointed after every 2nd epoch and the last (--val-interval 2), a milestone
    kept after 2. B: A's args.yaml (-c) into another directory, ended after 2 epochs by --stop-epoch, then the same
    command with --resume auto: B ends with A's weights, summary rows (one header) and checkpoint history."""
    a, b = tmp_path / "A", tmp_path / "B"
    ran = train(digits60, tmp_path, "--model", "test_resnet", "--opt", "xsam", "--lr", "0.05", "-b", "30",
                "--epochs", "3", "--val-interval", "2", "--save-epochs", "2", "--experiment", "A")
    assert "no evaluation or checkpoint (--val-interval 2)" in ran.stderr
    assert {p.name for p in a.glob("*.pth.tar")} == {"checkpoint-1.pth.tar", "checkpoint-2.pth.tar", "last.pth.tar",
                                                      "model_best.pth.tar", "milestone-2.pth.tar"}
    last = load(a / "last.pth.tar")
    assert (last["args"].opt, last["args"].lr, last["args"].val_interval, last["arch"]) == ("xsam", 0.05, 2,
                                                                                           "test_resnet")
    resumed = ["-c", str(a / "args.yaml"), "--experiment", "B", "--resume", "auto"]
    first = command(*resumed, "--stop-epoch", "2")
    assert first.returncode == 0 and f"no {b / 'last.pth.tar'} yet, starting fresh" in first.stderr
    assert load(b / "last.pth.tar")["epoch"] == 1
    second = command(*resumed)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {b / 'last.pth.tar'}" in second.stderr and "Restored checkpoint history (1 files)" in \
        second.stderr
    rows = (b / "summary.csv").read_text().splitlines()
    assert rows == (a / "summary.csv").read_text().splitlines() and sum(r.startswith("epoch") for r in rows) == 1
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    end_a, end_b = load(a / "last.pth.tar"), load(b / "last.pth.tar")
    assert all(torch.equal(end_a["state_dict"][k], end_b["state_dict"][k]) for k in end_a["state_dict"])
    assert end_b["saver"]["checkpoint_files"] == end_a["saver"]["checkpoint_files"]


def test_timm_flags_reach_timms_own_factories(digits60, tmp_path, monkeypatch):
    """Model, dataset and loader flags arrive at timm's factories under timm's names (the real factories, wrapped
    to record their arguments); --initial-checkpoint loads its weights; without --output or --experiment the run
    writes to timm's default ./output/train/<date>-<model>-<size>."""
    import timm

    import timm_ext.train as entry
    from timm_ext.training import data

    calls = {}

    def record(module, name):
        real = getattr(module, name)

        def recorded(*args, **kwargs):
            result = real(*args, **kwargs)
            calls.setdefault(name, []).append((kwargs, result))
            return result

        monkeypatch.setattr(module, name, recorded)

    for module, name in ((entry, "create_model"), (data, "create_loader"), (data, "create_dataset")):
        record(module, name)
    torch.manual_seed(3)
    initial = timm.create_model("test_resnet", num_classes=10).state_dict()
    torch.save(initial, tmp_path / "initial.pth")
    (tmp_path / "classes.txt").write_text("\n".join(str(9 - i) for i in range(10)))
    monkeypatch.chdir(tmp_path)
    entry.main(["--data-dir", str(digits60), "--dataset", "", "--num-classes", "10", "--img-size", "16", "-b", "30",
                "-vb", "20", "--workers", "0", "--epochs", "1", "--model", "test_resnet", "--opt", "sgd",
                "--lr", "0.01", "--initial-checkpoint", str(tmp_path / "initial.pth"), "--gp", "avg",
                "--drop-block", "0.1", "--class-map", str(tmp_path / "classes.txt"), "--input-img-mode", "RGB",
                "--train-crop-mode", "rkrr", "--color-jitter-prob", "0.5", "--grayscale-prob", "0.1",
                "--gaussian-blur-prob", "0.2", "--reprob", "0.2", "--resplit", "--worker-seeding", "part",
                "--use-multi-epochs-loader"])
    (model_kwargs, _), = calls["create_model"]
    assert (model_kwargs["drop_block_rate"], model_kwargs["global_pool"]) == (0.1, "avg")
    assert calls["create_dataset"][0][0]["class_map"] == str(tmp_path / "classes.txt")
    assert calls["create_dataset"][0][1].reader.class_to_idx["9"] == 0
    assert all(call[0]["input_img_mode"] == "RGB" for call in calls["create_dataset"])
    (train_kwargs, _), (eval_kwargs, _) = calls["create_loader"]
    assert {k: train_kwargs[k] for k in ("train_crop_mode", "color_jitter_prob", "grayscale_prob", "gaussian_blur_prob",
                                         "re_prob", "re_split", "worker_seeding", "use_multi_epochs_loader",
                                         "use_prefetcher")} == {
        "train_crop_mode": "rkrr", "color_jitter_prob": 0.5, "grayscale_prob": 0.1, "gaussian_blur_prob": 0.2,
        "re_prob": 0.2, "re_split": True, "worker_seeding": "part", "use_multi_epochs_loader": True,
        "use_prefetcher": True}
    assert eval_kwargs["batch_size"] == 20
    run_dir, = (tmp_path / "output" / "train").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}-test_resnet-16", run_dir.name)
    assert (run_dir / "args.yaml").is_file() and (run_dir / "last.pth.tar").is_file()


def test_without_the_prefetcher_mixup_mixes_training_batches_only(digits60, tmp_path, monkeypatch):
    """--no-prefetcher: the loop moves the batches itself and, as timm's train.py, applies Mixup to every training
    batch and to no evaluation batch (timm's Mixup, wrapped to record the batches it mixes)."""
    import timm_ext.train as entry
    from timm_ext.training import data

    mixed = []

    class RecordedMixup(data.Mixup):
        def __call__(self, x, target):
            mixed.append(len(x))
            return super().__call__(x, target)

    monkeypatch.setattr(data, "Mixup", RecordedMixup)
    entry.main(train_argv(digits60, tmp_path, "--model", "test_resnet", "--epochs", "1", "-b", "30", "-vb", "20",
                          "--opt", "sam", "--lr", "0.01", "--no-prefetcher", "--mixup", "0.5", "--channels-last"))
    assert mixed == [30, 30]
    row, = summary(tmp_path)
    assert math.isfinite(float(row["eval_loss"])) and 0 <= float(row["eval_top1"]) <= 100


def test_augmix_splits_with_jsd_loss_split_bn_and_a_cpu_ema_under_sam(digits60, tmp_path):
    """--aug-splits 2 --jsd-loss --split-bn trains a SAM epoch (split BN keeps auxiliary statistics); with
    --model-ema-force-cpu the EMA is kept and saved but, as in timm, not evaluated: the eval metrics are the raw
    model's."""
    ran = train(digits60, tmp_path, "--model", "test_resnet", "--epochs", "1", "-b", "30", "--opt", "sam",
                "--lr", "0.05", "--aug-splits", "2", "--jsd-loss", "--split-bn", "--model-ema",
                "--model-ema-force-cpu", aug=True)
    checkpoint = weights(tmp_path)
    assert any(".aux_bn." in k for k in checkpoint["state_dict"]) and "state_dict_ema" in checkpoint
    assert "(EMA)" not in ran.stderr
    logged = re.search(r"Epoch 0: eval loss (\S+)", ran.stderr).group(1)
    assert float(summary(tmp_path)[0]["eval_loss"]) == pytest.approx(float(logged), abs=1e-4)
