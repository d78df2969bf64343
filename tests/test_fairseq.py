"""fairseq integration through the real CLIs (fairseq-preprocess, fairseq-train, fairseq-generate)."""

from __future__ import annotations

import concurrent.futures
import copy
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq_tools import COMMON, cli, load, make_data_bin, train
from helpers import assert_equal_nested, free_port

import sam_plugins

pytestmark = pytest.mark.fairseq


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    return make_data_bin(tmp_path_factory.mktemp("corpus"))


def model_weights(path):
    return load(path)["model"]


@pytest.fixture(scope="module")
def initial_weights(data_bin, tmp_path_factory):
    """The model every run of the tiny setup starts from (seed 1), saved by a run with lr 0."""
    out = tmp_path_factory.mktemp("initial")
    train(data_bin, out, "--optimizer", "sam", "--sam-base", "sgd", "--lr", "0", "--max-update", "1")
    return model_weights(out / "checkpoint_last.pt")


def test_every_variant_trains_end_to_end(data_bin, tmp_path):
    """Every variant, two fairseq-train processes at a time (each is single-threaded here)."""
    names = sam_plugins.available()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda name: train(data_bin, tmp_path / name, "--optimizer", name, "--max-update", "3",
                                               "--update-freq", "2", "--sam-rho", "0.1"), names)
        for name, result in zip(names, results):
            check_trained_variant(name, result, tmp_path / name)


def check_trained_variant(name, result, save_dir):
    log = result.stdout + result.stderr
    assert "num_updates 3" in log, name
    assert "sam_sharpness" in log, name
    state = load(save_dir / "checkpoint_last.pt")["last_optimizer_state"]
    assert state["sam"]["variant"] == name
    assert (state["sam"]["counters"]["updates"], state["sam"]["counters"]["skipped"]) == (3, 0)
    if name == "xsam":
        assert "sam_alpha" in log and "sam_psi" in log
        assert state["sam"]["counters"]["probes"] >= 1


def build_trainer(data_bin, *args):
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    import fairseq_ext  # noqa: F401

    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, [str(data_bin), *COMMON, *args]))
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train", combine=False, epoch=1)
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion)


def first_update_samples(trainer, update_freq):
    from fairseq.data import iterators

    epoch_itr = trainer.get_train_iterator(epoch=1, load_dataset=False)
    return next(iterators.GroupedIterator(epoch_itr.next_epoch_itr(shuffle=False), update_freq))


class FullBatch:
    """The loss of all micro-batches of one update (sum / total sample size) on a copy of the model."""

    def __init__(self, trainer, samples):
        self.trainer, self.samples = trainer, [trainer._prepare_sample(s)[0] for s in samples]
        self.model = copy.deepcopy(trainer.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def loss(self):
        total, size = 0.0, 0
        for sample in self.samples:
            loss, sample_size, _ = self.trainer.criterion(self.model, sample)
            total, size = total + loss, size + sample_size
        return total / size

    def grad(self):
        return torch.autograd.grad(self.loss(), self.params)

    def set(self, tensors):
        with torch.no_grad():
            for p, t in zip(self.params, tensors):
                p.copy_(t)


def flat_norm(tensors):
    return torch.linalg.vector_norm(torch.stack([t.norm() for t in tensors]))


def trained_params(trainer):
    return [p.detach() for p in trainer.model.parameters() if p.requires_grad]


def test_update_freq_sam_gradient_equals_single_batch_sam(data_bin):
    """Two micro-batches: SAM's ascent uses the gradient of their union, and so does the update."""
    rho, lr = 0.2, 0.5
    trainer = build_trainer(data_bin, "--optimizer", "sam", "--sam-base", "sgd", "--lr", str(lr), "--sam-rho",
                            str(rho), "--update-freq", "2", "--dropout", "0")
    samples = first_update_samples(trainer, 2)
    assert len(samples) == 2
    ref = FullBatch(trainer, samples)
    theta0 = [p.detach().clone() for p in ref.params]
    g0 = ref.grad()
    ref.set([t + rho / flat_norm(g0) * g for t, g in zip(theta0, g0)])
    g1 = ref.grad()
    expected = [t - lr * g for t, g in zip(theta0, g1)]

    trainer.train_step(samples)
    got = trained_params(trainer)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    naive = [t - lr * g for t, g in zip(theta0, g0)]
    assert max((g - n).abs().max().item() for g, n in zip(got, naive)) > 1e-4


def test_xsam_probe_and_update_equal_an_independent_computation(data_bin):
    rho, rho_m, lr = 0.2, 0.6, 0.5
    trainer = build_trainer(data_bin, "--optimizer", "xsam", "--sam-base", "sgd", "--lr", str(lr), "--sam-rho",
                            str(rho), "--sam-rho-m", str(rho_m), "--update-freq", "2", "--dropout", "0")
    samples = first_update_samples(trainer, 2)
    ref = FullBatch(trainer, samples)
    theta0 = [p.detach().clone() for p in ref.params]
    g0 = ref.grad()
    ref.set([t + rho / flat_norm(g0) * g for t, g in zip(theta0, g0)])
    g1 = ref.grad()
    n0, n1 = flat_norm(g0), flat_norm(g1)
    cosine = float(sum((a * b).sum() for a, b in zip(g0, g1)) / (n0 * n1))
    psi = math.acos(min(1.0, max(-1.0, cosine)))

    def direction(alpha):
        c0, c1 = math.sin((1 - alpha) * psi) / math.sin(psi), math.sin(alpha * psi) / math.sin(psi)
        return [c0 * a / n0 + c1 * b / n1 for a, b in zip(g0, g1)]

    alphas = [i / 10 for i in range(21)]
    losses = []
    with torch.no_grad():
        for alpha in alphas:
            ref.set([t + rho_m * v for t, v in zip(theta0, direction(alpha))])
            losses.append(float(ref.loss()))
    best = alphas[losses.index(max(losses))]
    expected = [t - lr * n1 * v for t, v in zip(theta0, direction(best))]

    trainer.train_step(samples)
    core = trainer.optimizer.core
    assert core.scalars["alpha"] == pytest.approx(best)
    for e, g in zip(expected, trained_params(trainer)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_tiny_rho_equals_the_plain_base_optimizer(data_bin, tmp_path):
    args = ["--max-update", "6", "--update-freq", "2", "--adam-betas", "(0.9, 0.98)"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(train, data_bin, tmp_path / "adam", "--optimizer", "adam", *args),
                pool.submit(train, data_bin, tmp_path / "sam", "--optimizer", "sam", "--sam-rho", "1e-12", *args)]
        for run in runs:
            run.result()
    plain, sam = model_weights(tmp_path / "adam/checkpoint_last.pt"), model_weights(tmp_path / "sam/checkpoint_last.pt")
    for key in plain:
        torch.testing.assert_close(sam[key], plain[key], rtol=1e-5, atol=1e-6)
    # On torch >= 2.6 fairseq's loader refuses every checkpoint, plain adam's too (weights_only); the
    # plugin (--user-dir) is what makes it load.
    command = [str(data_bin), "--path", str(tmp_path / "adam/checkpoint_last.pt"), "--gen-subset", "test",
               "--batch-size", "64", "--cpu", "--max-len-b", "5"]
    without = cli("fairseq-generate", *command, check=False)
    assert without.returncode != 0 and "weights_only" in without.stdout + without.stderr
    cli("fairseq-generate", "--user-dir", COMMON[1], *command)


def fairseq_train_command(data_bin, save_dir, *args):
    return [str(Path(sys.executable).parent / "fairseq-train"), str(data_bin), *COMMON, "--save-dir", str(save_dir),
            *args]


def train_until_killed(data_bin, save_dir, *args, after):
    """fairseq-train, SIGKILLed as soon as it logs the checkpoint saved ``after`` (e.g. "@ 3 updates")."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(fairseq_train_command(data_bin, save_dir, *args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env) as process:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Saved checkpoint" in line and after in line:
                process.kill()
                break
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(lines[-30:])


def per_update_log(text):
    """{num_updates: the train_inner fields that do not measure time}."""
    timing = {"wps", "ups", "wall", "train_wall"}
    lines = {}
    for fields in re.findall(r"\| train_inner \| epoch \d+:\s+\d+ / \d+ (.*)", text):
        values = dict(item.split("=", 1) for item in fields.split(", "))
        lines[int(values["num_updates"])] = {k: v for k, v in values.items() if k not in timing}
    return lines


MEMORY_EFFICIENT_FP16 = "--memory-efficient-fp16"


@pytest.mark.parametrize(("name", "flags"), [
    ("xsam", []), ("evsam", []),
    ("fsam", [MEMORY_EFFICIENT_FP16]), ("fsam", [MEMORY_EFFICIENT_FP16, "--sam-base", "nag"]),
    ("evsam", [MEMORY_EFFICIENT_FP16]), ("evsam", [MEMORY_EFFICIENT_FP16, "--sam-base", "nag"]),
    ("adam", [MEMORY_EFFICIENT_FP16]),  # the reference: fairseq's own optimizer under the same flag
])
def test_sigkill_mid_epoch_and_restart_continue_bit_identically(data_bin, tmp_path, name, flags):
    """An epoch is 8 updates; the run is killed after saving at update 3 and restarted with the same
    command. fairseq calls begin_epoch again for the unfinished epoch; XSAM (probing once per epoch)
    must not probe again, X-SAM's eigenvector state and schedule and F-SAM's gradient average must carry over:
    each later update's log line and the final weights and optimizer state (the base's too) equal the
    uninterrupted run's. Under --memory-efficient-fp16 the parameters are fp16 while the Adam/NAG state is fp32,
    which fairseq's loader special-cases for its own optimizers. (Every variant's state across a save and load:
    tests/test_engine.py::test_resume_is_bit_identical.)"""
    args = ["--optimizer", name, *flags, "--max-update", "10", "--save-interval-updates", "3",
            "--keep-interval-updates", "1"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        straight = pool.submit(train, data_bin, tmp_path / "straight", *args)
        train_until_killed(data_bin, tmp_path / "killed", *args, after="@ 3 updates")
        restarted = train(data_bin, tmp_path / "killed", *args)
        straight = straight.result()
    assert "Loaded checkpoint" in restarted.stdout and "(epoch 1 @ 3 updates)" in restarted.stdout
    expected, got = per_update_log(straight.stdout), per_update_log(restarted.stdout)
    assert sorted(got) == list(range(4, 11))
    assert {u: expected[u] for u in got} == got
    a, b = load(tmp_path / "straight/checkpoint_last.pt"), load(tmp_path / "killed/checkpoint_last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert_equal_nested(a["last_optimizer_state"], b["last_optimizer_state"])
    base_state = [s for s in a["last_optimizer_state"]["state"].values()]
    assert base_state and all(t.dtype == torch.float32 for s in base_state for k, t in s.items() if k != "step")
    if name == "adam":
        return
    sam = a["last_optimizer_state"]["sam"]
    own = {"fsam": {"ema"}, "evsam": {"eigvec"}, "xsam": set()}[name]
    assert all(set(entries) == own for entries in sam["state"].values())  # the variant's state, nothing else
    if name == "xsam":
        assert sam["counters"]["probes"] == 2  # epoch 1's first update and epoch 2's


@pytest.mark.parametrize(("saved", "resumed"), [("sgd", "nag")])
def test_changing_the_base_on_resume_is_refused_with_fairseqs_advice(data_bin, tmp_path, saved, resumed):
    """sgd → nag used to train on with the wrong state (adam ↔ sgd crashed with a bare KeyError); other
    pairs are refused by the same core check (tests/test_engine.py)."""
    train(data_bin, tmp_path, "--optimizer", "sam", "--sam-base", saved, "--max-update", "1")
    result = train(data_bin, tmp_path, "--optimizer", "sam", "--sam-base", resumed, "--max-update", "2", check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(rf"--optimizer sam --sam-base {resumed}: SAM.load_state_dict: the state dict was saved with "
                     r"base optimizer \S+, this optimizer's base is \S+; .*Add --reset-optimizer", log), log[-2000:]
    assert "begin training epoch" not in log


def test_sam_metrics_are_means_over_the_log_interval_and_counts_are_sums(data_bin, tmp_path):
    """The same run logged every update and every second update (logging does not change training):
    each line of the second shows the mean of the two updates' α*, ψ and sharpness, and the number of
    probes they made."""
    args = ["--optimizer", "xsam", "--sam-probe-every", "1", "--max-update", "4", "--dropout", "0"]
    board = ["--tensorboard-logdir", str(tmp_path / "board")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        every, pairs = (pool.submit(train, data_bin, tmp_path / str(n), *args, "--log-interval", str(n),
                                    *(board if n == 2 else [])) for n in (1, 2))
        every, pairs = per_update_log(every.result().stdout), per_update_log(pairs.result().stdout)
    assert sorted(pairs) == [2, 4]
    for update in (2, 4):
        for key in ("sam_alpha", "sam_psi", "sam_sharpness"):
            mean = (float(every[update - 1][key]) + float(every[update][key])) / 2
            assert float(pairs[update][key]) == pytest.approx(mean, abs=2e-3), (update, key)
        assert (pairs[update]["sam_probes"], pairs[update]["sam_skipped"]) == ("2", "0")
    steps = [abs(float(every[u][k]) - float(every[u - 1][k])) for u in (2, 4) for k in ("sam_alpha", "sam_sharpness")]
    assert max(steps) > 0.01  # a last-value log would differ from the mean
    events = b"".join(path.read_bytes() for path in (tmp_path / "board" / "train_inner").glob("events.out.tfevents.*"))
    assert b"sam_sharpness" in events and b"sam_probes" in events


def test_averaged_checkpoints_generate_with_sacrebleu(data_bin, tmp_path):
    """``python -m fairseq_ext.average`` over the two newest update checkpoints: the exact mean of their
    weights, and fairseq-generate scores it with sacrebleu."""
    train(data_bin, tmp_path, "--optimizer", "xsam", "--max-update", "6", "--save-interval-updates", "2",
          "--keep-interval-updates", "3")
    average = tmp_path / "average.pt"
    subprocess.run([sys.executable, "-m", "fairseq_ext.average", "--inputs", str(tmp_path), "--num-update-checkpoints",
                    "2", "--output", str(average)], check=True, capture_output=True, timeout=300)
    a, b, got = (model_weights(tmp_path / name) for name in ("checkpoint_1_6.pt", "checkpoint_1_4.pt", "average.pt"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for key in a:
        assert torch.equal(got[key], ((a[key].double() + b[key].double()) / 2).float()), key
    result = cli("fairseq-generate", str(data_bin), "--user-dir", COMMON[1], "--path", str(average), "--beam", "5",
                 "--remove-bpe", "--gen-subset", "test", "--batch-size", "64", "--cpu", "--scoring", "sacrebleu")
    assert re.search(r"Generate test with beam=5: BLEU = \d", result.stdout + result.stderr)


@pytest.mark.parametrize(("args", "message"), [
    (["--optimizer", "xsam", "--sam-rho", "0"],
     r"--optimizer xsam: XSAM: rho=0.0 is invalid; allowed: a float in \(0.0, inf\)"),
    (["--optimizer", "xsam", "--sam-alpha-step", "0"], r"alpha_step=0.0 is invalid"),
    (["--optimizer", "wsam", "--sam-gamma", "1"], r"gamma=1.0 is invalid; allowed: a float in \[0.0, 1.0\)"),
    (["--optimizer", "sam", "--sam-base", "lamb"], r"argument --sam-base: invalid choice: 'lamb'"),
    (["--optimizer", "xsam", "--sam-grad-scale", "norm"], r"argument --sam-grad-scale: invalid choice: 'norm'"),
    (["--optimizer", "xsm"], r"argument --optimizer: invalid choice: 'xsm'"),
    (["--optimizer", "xsam", "--amp"], r"ValueError: --optimizer xsam does not support --amp: .* use --fp16"),
    (["--optimizer", "sam", "--memory-efficient-fp16", "--sam-base", "sgd"],
     r"ValueError: --optimizer sam --sam-base sgd cannot step fp16/bf16 parameters in place "
     r"\(--memory-efficient-fp16/bf16\): SGD keeps its state in the parameters' precision; use --sam-base adam"),
    (["--optimizer", "sam", "--momentum", "0.9"],
     r"--momentum 0.9: a flag of the sgd and nag base; this run's base is adam \(--sam-base adam\)"),
    (["--optimizer", "sam", "--sam-base", "nag", "--adam-eps", "1e-06"],
     r"--adam-eps 1e-06: a flag of the adam base; this run's base is nag"),
    (["--optimizer", "sam", "--clip-norm", "1", "--sam-max-grad-norm", "0.5"],
     r"--clip-norm 1.0 and --sam-max-grad-norm 0.5: both clip the update direction of --optimizer sam"),
])
def test_bad_flags_fail_fast_with_clear_errors(data_bin, tmp_path, args, message):
    result = train(data_bin, tmp_path, *args, "--max-update", "2", check=False)
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), (result.stdout + result.stderr)[-2000:]
    assert "begin training epoch" not in result.stdout
    assert not (tmp_path / "checkpoint_last.pt").exists()


def test_a_base_takes_its_flags_with_the_defaults_of_fairseqs_own_optimizer(data_bin, tmp_path):
    """--sam-base nag without --momentum is fairseq's --optimizer nag: momentum 0.99; --momentum 0.5 is used."""
    for momentum in ([], ["--momentum", "0.5"]):
        out = tmp_path / f"nag{len(momentum)}"
        train(data_bin, out, "--optimizer", "sam", "--sam-base", "nag", *momentum, "--max-update", "1")
        groups = load(out / "checkpoint_last.pt")["last_optimizer_state"]["param_groups"]
        assert {group["momentum"] for group in groups} == ({0.5} if momentum else {0.99})


def test_an_always_non_finite_pass_in_fp32_stops_with_fairseqs_error(data_bin, tmp_path):
    """ρ 1e30 puts the ascent's point where the loss is not finite: every update is skipped; in fp32, which has no
    loss scale to lower, the run stops after 10 in a row with fairseq's FloatingPointError, as fairseq's own fp32
    path stops at a non-finite gradient (fp16 stops at fairseq's minimum loss scale)."""
    result = train(data_bin, tmp_path, "--optimizer", "sam", "--sam-rho", "1e30", "--max-update", "30", check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"FloatingPointError: sam: 10 updates in a row skipped, the last because pass 1 of 1 .*"
                     r"had a non-finite loss or gradient: gradients are Nan/Inf", log), log[-3000:]
    assert log.count("skipped update") == 9


def test_no_replay_rng_gives_each_pass_fresh_dropout_masks(data_bin, tmp_path):
    """With dropout on (the transformer's 0.1), replaying fairseq's per-update seed gives every pass the first
    pass's masks; --sam-no-replay-rng draws new ones, so the runs differ."""
    for name, flags in (("replay", []), ("fresh", ["--sam-no-replay-rng"])):
        train(data_bin, tmp_path / name, "--optimizer", "sam", "--sam-rho", "0.5", *flags, "--max-update", "2")
    a, b = (model_weights(tmp_path / name / "checkpoint_last.pt") for name in ("replay", "fresh"))
    assert any(not torch.equal(a[key], b[key]) for key in a)


def test_changed_sam_flags_take_effect_on_resume_and_are_recorded(data_bin, tmp_path):
    """fairseq keeps a checkpoint's weight decay on resume; the --sam-* flags of the new command line are used
    (the per-group ρ included, a change logged) and recorded in the next checkpoint, config and state alike."""
    train(data_bin, tmp_path, "--optimizer", "sam", "--sam-rho", "0.05", "--max-update", "2")
    resumed = train(data_bin, tmp_path, "--optimizer", "sam", "--sam-rho", "0.2", "--max-update", "3")
    assert "--sam-rho 0.2 replaces the checkpoint's 0.05" in resumed.stdout + resumed.stderr
    assert per_update_log(resumed.stdout)[3]["sam_rho"] == "0.2"
    checkpoint = load(tmp_path / "checkpoint_last.pt")
    assert checkpoint["cfg"]["optimizer"]["sam_rho"] == 0.2
    assert {group["rho"] for group in checkpoint["last_optimizer_state"]["param_groups"]} == {0.2}


def test_ema_seed_model_loads_a_checkpoint(data_bin, tmp_path):
    """--ema-seed-model reads a checkpoint through fairseq's EMA loader, which the plugin lets torch >= 2.6 read."""
    ema = ["--optimizer", "sam", "--store-ema", "--ema-start-update", "0"]
    train(data_bin, tmp_path / "seed", *ema, "--max-update", "1")
    seeded = train(data_bin, tmp_path / "seeded", *ema, "--ema-seed-model", str(tmp_path / "seed/checkpoint_last.pt"),
                   "--max-update", "1")
    assert "begin training epoch" in seeded.stdout


def test_fully_sharded_data_parallel_is_refused_when_the_optimizer_is_built(data_bin):
    """Through fairseq's own config parsing and optimizer factory; the CLI stops earlier here because
    --ddp-backend fully_sharded needs fairscale, which is not installed."""
    from fairseq import optim, options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data_bin), *COMMON, "--optimizer", "xsam", "--ddp-backend",
                                                "fully_sharded"])
    cfg = convert_namespace_to_omegaconf(args)
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"--optimizer xsam does not support --ddp-backend fully_sharded: .* "
                                         r"use --ddp-backend c10d, legacy_ddp or no_c10d"):
        optim.build_optimizer(cfg.optimizer, params)


@pytest.mark.parametrize("arch", [["--arch", "transformer"], []])
def test_help_lists_the_generated_flags(data_bin, arch):
    """With or without --arch (without it fairseq adds no stage's flags to --help; the plugin adds the optimizer's)."""
    text = cli("fairseq-train", str(data_bin), "--user-dir", COMMON[1], *arch, "--optimizer", "xsam", "--help").stdout
    for flag in ("--sam-base", "--sam-rho", "--sam-rho-m", "--sam-alpha-max", "--sam-alpha-step",
                 "--sam-no-probe", "--sam-probe-every", "--sam-grad-scale", "--sam-no-replay-rng"):
        assert flag in text
    assert help_default(text, "--sam-rho") == "0.15" and help_default(text, "--sam-alpha-step") == "0.1"
    assert "(default: sgd 0.0, nag 0.99, as fairseq's own optimizers)" in " ".join(text.split())


def help_default(text, flag):
    entry = re.search(rf"^  {flag} \S+\s+(.*?)(?=^  -)", text, re.M | re.S).group(1)
    return re.search(r"default: (\S+)\)$", " ".join(entry.split())).group(1)


@pytest.mark.parametrize(("name", "flag", "default"), [("sam", "--sam-rho", "0.05"), ("msam", "--sam-steps", "2")])
def test_help_shows_each_variants_own_defaults(data_bin, name, flag, default):
    text = cli("fairseq-train", str(data_bin), "--user-dir", COMMON[1], "--arch", "transformer", "--optimizer", name,
               "--help").stdout
    assert help_default(text, flag) == default


@pytest.mark.parametrize("name", ["xsam", "msamplus"])
def test_two_gloo_workers_equal_one_worker_with_twice_the_update_freq(data_bin, tmp_path, name):
    """legacy_ddp on 2 CPU processes: the same global batch, the same probes (losses all-reduced).
    An epoch is 9 batches here, so its last update gives the second worker a dummy batch."""
    args = ["--optimizer", name, "--max-tokens", "700", "--max-update", "5", "--dropout", "0", "--sam-rho", "0.1"]
    single = train(data_bin, tmp_path / "one", *args, "--update-freq", "2")
    distributed = ["--distributed-world-size", "2", "--distributed-backend", "gloo", "--distributed-no-spawn",
                   "--distributed-init-method", f"tcp://127.0.0.1:{free_port()}", "--ddp-backend", "legacy_ddp"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(train, data_bin, tmp_path / "two", *args, *distributed, "--distributed-rank", str(r))
                for r in range(2)]
        master = runs[0].result()
        runs[1].result()
    words = [re.findall(r"wpb=(\d+)", r.stdout + r.stderr) for r in (single, master)]
    assert words[0] and words[0] == words[1]
    # Each worker's sharpness is of its own half batch; the logged value is their mean, the global one.
    lines = [per_update_log(r.stdout) for r in (single, master)]
    for update in range(1, 6):
        assert float(lines[1][update]["sam_sharpness"]) == pytest.approx(float(lines[0][update]["sam_sharpness"]),
                                                                          rel=1e-3, abs=2e-4), update
    one, two = model_weights(tmp_path / "one/checkpoint_last.pt"), model_weights(tmp_path / "two/checkpoint_last.pt")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("precision", "base"), [
    (["--fp16", "--fp16-no-flatten-grads"], ["--sam-base", "sgd", "--lr", "1.0"]),
    # fp16 in place needs a base that steps fp16 parameters in fp32: fairseq's adam.
    (["--memory-efficient-fp16"], ["--sam-base", "adam", "--lr", "0.01"]),
])
def test_fp16_updates_match_fp32(data_bin, initial_weights, tmp_path, precision, base):
    """Through fairseq's fp16 wrappers (loss scaling, fp32 masters or fp16 in place) the SAM update
    matches the fp32 one to fp16 accuracy; a wrong scale or accumulated replays would be far off."""
    args = ["--optimizer", "sam", *base, "--update-freq", "2", "--dropout", "0", "--sam-rho", "0.1",
            "--max-update", "2"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(train, data_bin, tmp_path / "fp32", *args),
                pool.submit(train, data_bin, tmp_path / "fp16", *args, *precision, "--fp16-init-scale", "4")]
        log = [run.result() for run in runs][1]
    assert "loss_scale=" in log.stdout + log.stderr
    init, (fp32, fp16) = initial_weights, (model_weights(tmp_path / d / "checkpoint_last.pt") for d in ("fp32", "fp16"))
    expected = torch.cat([(fp32[k] - init[k]).flatten() for k in init])
    got = torch.cat([(fp16[k].float() - init[k]).flatten() for k in init])
    error = float((got - expected).norm() / expected.norm())
    assert float(expected.norm()) > 0.1
    assert error < 0.05, error
    state = load(tmp_path / "fp16/checkpoint_last.pt")["last_optimizer_state"]["sam"]
    assert state["counters"] == {"updates": 2, "skipped": 0}


def test_skipped_updates_are_not_counted_and_each_is_reported(data_bin, tmp_path):
    """ρ = 20 sends the perturbed pass to fp16 overflow until the loss scale is small. As with fairseq's
    own overflow skip, a skipped update leaves num_updates, the warmup lr and --max-update alone; each
    prints one warning, the interval's log line sums them, the loss scale halves for each, and the
    checkpoint keeps the total."""
    args = ["--optimizer", "sam", "--update-freq", "2", "--dropout", "0", "--fp16", "--fp16-no-flatten-grads",
            "--fp16-init-scale", "128", "--sam-rho", "20", "--max-update", "3", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "10", "--log-interval", "3"]
    log = train(data_bin, tmp_path, *args).stdout
    warnings = re.findall(r"WARNING \| fairseq_ext.hooks \| sam: skipped update (\d+) \((\d+) skipped so far\): "
                          r"pass 1 of 1 \(the gradient at ϑ_1\) had a non-finite loss or gradient; weights and "
                          r"optimizer state unchanged, the update is not counted; setting loss scale to: ([\d.]+)", log)
    skipped = len(warnings)
    assert skipped >= 2 and [int(w[1]) for w in warnings] == list(range(1, skipped + 1))
    assert all(1 <= int(w[0]) <= 3 for w in warnings)
    line = per_update_log(log)[3]
    assert (line["sam_skipped"], float(line["lr"])) == (str(skipped), pytest.approx(3e-4))
    assert float(line["loss_scale"]) == 128 / 2**skipped == float(warnings[-1][2])
    state = load(tmp_path / "checkpoint_last.pt")
    assert state["last_optimizer_state"]["sam"]["counters"] == {"updates": 3, "skipped": skipped}
    assert state["optimizer_history"][-1]["num_updates"] == 3
