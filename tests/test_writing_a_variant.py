"""The worked example of docs/writing-a-variant.md, run as a user would: a module outside the package, registered
after timm_ext and fairseq_ext are imported, reaching sam_plugins, timm and fairseq alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fairseq_tools import COMMON, cli, load, make_data_bin

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "writing-a-variant.md"


def example_module() -> str:
    """The page's first Python block after the worked example's heading."""
    text = PAGE.read_text().split("## A worked example", 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


CHECKS = r"""
import io, json

import torch

import fairseq_ext  # noqa: F401
import timm_ext  # noqa: F401
import my_gsam  # registered only now, after both integrations
import sam_plugins
from fairseq.optim import OPTIMIZER_REGISTRY, OPTIMIZER_DATACLASS_REGISTRY
from timm.optim import create_optimizer_v2
from reference import make_data, make_model


def train(name, updates, steps, state=None):
    model = make_model()
    x, y = make_data()
    opt = sam_plugins.create(name, model, base="sgd", lr=0.1, momentum=0.9, rho=0.1, alpha=0.3, steps=steps)
    if state is not None:
        opt.load_state_dict(state)
    for _ in range(updates):
        opt.step(lambda: (opt.backward(loss := ((model(x) - y) ** 2).mean()), loss)[1])
    return model, opt


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


facts = {"available": "mygsam" in sam_plugins.available()}
for steps in (1, 2):
    mine, builtin = flat(train("mygsam", 3, steps)[0]), flat(train("gsam", 3, steps)[0])
    start = flat(make_model())
    facts[f"moved_{steps}"] = float((mine - start).abs().max())
    facts[f"difference_{steps}"] = float((mine - builtin).abs().max())

model, opt = train("mygsam", 2, 1)
buffer = io.BytesIO()
torch.save(opt.state_dict(), buffer)
buffer.seek(0)
saved = torch.load(buffer, weights_only=True)
facts["saved_variant"] = saved["sam"]["variant"]
copy = make_model()
copy.load_state_dict(model.state_dict())
resumed = sam_plugins.create("mygsam", copy, base="sgd", lr=0.1, momentum=0.9, rho=0.1, alpha=0.3)
resumed.load_state_dict(saved)
x, y = make_data()
for o, m in ((opt, model), (resumed, copy)):
    o.step(lambda: (o.backward(loss := ((m(x) - y) ** 2).mean()), loss)[1])
facts["resumed_equal"] = torch.equal(flat(model), flat(copy))
facts["help_lists_alpha"] = "alpha (float, default 0.4)" in sam_plugins.get("mygsam").__doc__

timm_opt = create_optimizer_v2(make_model(), opt="mygsam", lr=0.1, weight_decay=1e-4, rho=0.1, alpha=0.3)
facts["timm_class"] = type(timm_opt).__name__
facts["timm_alpha"] = timm_opt.hp.alpha
facts["fairseq_class"] = OPTIMIZER_REGISTRY["mygsam"].__name__
facts["fairseq_alpha_default"] = OPTIMIZER_DATACLASS_REGISTRY["mygsam"]().sam_alpha
print(json.dumps(facts))
"""


def write_example(folder: Path) -> None:
    (folder / "my_gsam.py").write_text(example_module())


@pytest.mark.timm
@pytest.mark.fairseq
def test_the_pages_variant_registered_late_reaches_every_registry_and_equals_gsam(tmp_path):
    write_example(tmp_path)
    env_path = f"{tmp_path}:{ROOT / 'tests'}"
    result = subprocess.run([sys.executable, "-c", CHECKS], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["available"]
    for steps in (1, 2):
        assert facts[f"moved_{steps}"] > 1e-3
        assert facts[f"difference_{steps}"] < 1e-12
    assert facts["saved_variant"] == "mygsam" and facts["resumed_equal"]
    assert facts["help_lists_alpha"]
    assert (facts["timm_class"], facts["timm_alpha"]) == ("MyGSAM", 0.3)
    assert (facts["fairseq_class"], facts["fairseq_alpha_default"]) == ("FairseqMyGSAM", 0.4)


@pytest.mark.fairseq
def test_fairseq_train_runs_the_pages_variant_from_a_user_dir(tmp_path):
    """The page's --user-dir package: imports fairseq_ext and the example, then --optimizer mygsam."""
    write_example(tmp_path)
    plugin = tmp_path / "myplugins"
    plugin.mkdir()
    init = PAGE.read_text().split("## Reaching timm and fairseq", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (plugin / "__init__.py").write_text(init)
    data_bin = make_data_bin(tmp_path / "corpus", train=200, valid=20, test=20)
    assert COMMON[0] == "--user-dir"
    result = cli("fairseq-train", str(data_bin), "--user-dir", str(plugin), *COMMON[2:], "--save-dir",
                 str(tmp_path / "save"), "--optimizer", "mygsam", "--sam-alpha", "0.3", "--max-update", "2",
                 timeout=900)
    assert "num_updates 2" in result.stdout + result.stderr
    state = load(tmp_path / "save" / "checkpoint_last.pt")["last_optimizer_state"]
    assert state["sam"]["variant"] == "mygsam"
    assert state["sam"]["counters"]["updates"] == 2
