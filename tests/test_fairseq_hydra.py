"""fairseq-hydra-train selects our optimizers by name (``optimizer: xsam``, ``optimizer=xsam``) and trains
exactly as fairseq-train does: the Hydra plugin ``hydra_plugins.sam_plugins_fairseq`` registers them
before Hydra composes the config, and only inside fairseq's Hydra entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fairseq_tools import load, make_data_bin, train
from omegaconf import OmegaConf

from fairseq_ext.cli import USER_DIR, run

pytestmark = pytest.mark.fairseq

RHO = 0.1  # not xsam's default, so the run shows the value came through
UPDATES = 3


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_bin(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cli_checkpoint(data_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The fairseq-train run every Hydra run must equal."""
    out = tmp_path_factory.mktemp("cli")
    train(data_bin, out, "--optimizer", "xsam", "--sam-rho", str(RHO), "--max-update", str(UPDATES))
    return load(out / "checkpoint_last.pt")


def hydra_config(data_bin: Path, out: Path, optimizer: str, optimizer_section: dict[str, Any]) -> dict[str, Any]:
    """fairseq_tools.COMMON and TINY_MODEL as a Hydra config choosing ``optimizer`` in its defaults list.

    Every group chosen there also gets a section (possibly empty): fairseq stores FairseqConfig as the
    schema of the config it is given, and the schema's ``None`` for a group without a section would
    replace the group's node (``_self_`` is merged last).
    """
    return {
        "defaults": [{"task": "translation"}, {"criterion": "label_smoothed_cross_entropy"},
                     {"optimizer": optimizer}, {"lr_scheduler": "fixed"}, "_self_"],
        "hydra": {"run": {"dir": str(out / "hydra")}},
        "common": {"user_dir": USER_DIR, "cpu": True, "seed": 1, "log_format": "simple", "log_interval": 1,
                   "no_progress_bar": True},
        "dataset": {"max_tokens": 800, "num_workers": 0, "data_buffer_size": 0},
        "optimization": {"max_update": UPDATES, "lr": [1e-3]},
        "checkpoint": {"save_dir": str(out / "checkpoints"), "no_epoch_checkpoints": True},
        "task": {"data": str(data_bin)},
        "criterion": {"label_smoothing": 0.1},
        "optimizer": optimizer_section,
        "lr_scheduler": {},
        "model": {"_name": "transformer", "share_all_embeddings": True,
                  "encoder_layers": 1, "decoder_layers": 1, "encoder_embed_dim": 32, "decoder_embed_dim": 32,
                  "encoder_ffn_embed_dim": 64, "decoder_ffn_embed_dim": 64,
                  "encoder_attention_heads": 2, "decoder_attention_heads": 2},
    }


@pytest.mark.parametrize(("optimizer", "section", "overrides"), [
    ("xsam", {"sam_rho": RHO}, []),
    ("adam", {}, ["optimizer=xsam", f"optimizer.sam_rho={RHO}"]),
], ids=["defaults-list", "command-line"])
def test_hydra_selects_xsam_by_name_and_equals_the_cli_run(data_bin, cli_checkpoint, tmp_path, optimizer, section,
                                                           overrides):
    """Chosen in the config's defaults list, or switched to on the command line from adam; either way the
    full xsam node is composed (so ``optimizer.sam_rho`` overrides work) and the weights equal fairseq-train's."""
    conf = tmp_path / "conf"
    conf.mkdir()
    OmegaConf.save(OmegaConf.create(hydra_config(data_bin, tmp_path, optimizer, section)), conf / "tiny.yaml")
    result = run("fairseq-hydra-train", "--config-dir", str(conf), "--config-name", "tiny", *overrides, timeout=300)
    assert f"num_updates {UPDATES}" in result.stdout + result.stderr
    state = load(tmp_path / "checkpoints" / "checkpoint_last.pt")
    assert state["cfg"]["optimizer"]["_name"] == "xsam"
    assert state["cfg"]["optimizer"]["sam_rho"] == RHO
    assert state["last_optimizer_state"]["sam"]["variant"] == "xsam"
    assert state["last_optimizer_state"]["sam"]["counters"]["updates"] == UPDATES
    expected = cli_checkpoint["model"]
    assert state["model"].keys() == expected.keys()
    differing = [k for k, v in expected.items() if not torch.equal(state["model"][k], v)]
    assert not differing, f"weights differ from the fairseq-train run: {differing[:5]}"


PROBE = """
import sys
{setup}
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
found = set(p.__module__ for p in Plugins.instance().discover(SearchPathPlugin))
print("hydra_plugins.sam_plugins_fairseq" in found, "fairseq" in sys.modules, "fairseq_ext" in sys.modules)
"""


@pytest.mark.parametrize(("setup", "fairseq_imported", "registered"), [
    ("", False, False),
    ("import fairseq", True, False),
    ("import fairseq_cli.hydra_train", True, True),
], ids=["plain-hydra-app", "fairseq-argparse-tools", "fairseq-hydra-train"])
def test_plugin_is_discovered_and_registers_only_in_fairseqs_hydra_entry(setup, fairseq_imported, registered):
    """Hydra finds the plugin in every process; fairseq_ext (which patches fairseq's trainer) is imported
    only under fairseq's Hydra entry, not in other Hydra apps nor in fairseq-train's internal compose."""
    result = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == f"True {fairseq_imported} {registered}"
