"""The public contract for variants and torch's optimizer contract: hooks, skips by exception, true-unit
gradients under a GradScaler, torch's state-dict hooks, and constructor help generated from the declarations."""

from __future__ import annotations

import pytest
import torch
from helpers import mse_closure, state_bytes
from reference import flat, make_data, make_model

import sam_plugins
from sam_plugins import COMMON, Hyper, SharpnessAware, SkipUpdate, Update, with_defaults


class Recording(SharpnessAware):
    """SAM that records what its hooks see and stages a per-parameter state and a count."""

    name = "recording"
    hyperparameters = (*with_defaults(COMMON, rho=0.2), Hyper("fail_in", str, "", "hook that raises SkipUpdate",
                                                               choices=("", "prepare", "combine")))

    def initial_counters(self) -> dict[str, int]:
        return {"combined": 0}

    def prepare(self, ctx: Update) -> None:
        self.seen = {"norms": [], "grads": []}
        if self.hp.fail_in == "prepare":
            raise SkipUpdate("the test's prepare")

    def observe(self, ctx: Update, i: int) -> None:
        self.seen["grads"].append(torch.cat([g.reshape(-1) for g in ctx.grads()]).clone())

    def combine(self, ctx: Update) -> None:
        self.seen["norms"] = list(ctx.norms)
        ctx.stage(state={"last": [g.clone() for g in ctx.grads()]}, counts={"combined": 1})
        if self.hp.fail_in == "combine":
            raise SkipUpdate("the test's combine", "found nothing")


@pytest.mark.parametrize(("fail_in", "message"), [("prepare", "the test's prepare had a non-finite loss or gradient"),
                                                  ("combine", "the test's combine found nothing")])
def test_skip_update_from_a_hook_changes_nothing_and_is_reported(fail_in, message):
    model, (x, y) = make_model(), make_data()
    opt = Recording(model, lr=0.1, momentum=0.9, fail_in=fail_in)
    before, state = flat(model), state_bytes(opt)
    opt.step(mse_closure(opt, model, x, y))
    assert torch.equal(flat(model), before)
    assert opt.counters == {"updates": 0, "skipped": 1, "combined": 0}
    assert opt.last_skip == message
    opt.counters["skipped"] = 0
    assert state_bytes(opt) == state


def test_staged_state_is_committed_at_the_base_step():
    model, (x, y) = make_model(), make_data()
    opt = Recording(model, lr=0.1)
    opt.step(mse_closure(opt, model, x, y))
    assert opt.counters == {"updates": 1, "skipped": 0, "combined": 1}
    assert all(torch.equal(opt.state[p]["last"], p.grad) for p in model.parameters())


def test_hooks_see_gradients_in_true_units_under_a_grad_scaler():
    """The engine removes the loss scale after every pass: a variant never handles it."""
    seen = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**12)):
        model, (x, y) = make_model(), make_data()
        opt = Recording(model, lr=0.1, steps=2, grad_scaler=scaler)
        opt.step(mse_closure(opt, model, x, y))
        seen.append((opt.seen, flat(model)))
    (plain, plain_after), (scaled, scaled_after) = seen
    assert scaled["norms"] == plain["norms"]
    assert all(torch.equal(a, b) for a, b in zip(scaled["grads"], plain["grads"], strict=True))
    assert torch.equal(scaled_after, plain_after)


def test_torchs_state_dict_hooks_fire():
    model, (x, y) = make_model(), make_data()
    opt = sam_plugins.create("xsam", model, lr=0.1)
    opt.step(mse_closure(opt, model, x, y))
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append(("save-pre", o is opt)))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "note": "added"})
    state = opt.state_dict()
    assert calls == [("save-pre", True)] and state["note"] == "added" and state["sam"]["variant"] == "xsam"

    fresh = sam_plugins.create("xsam", make_model(), lr=0.1)

    def rename(o, sd):
        calls.append(("load-pre", "note" in sd))
        return {k: v for k, v in sd.items() if k != "note"}

    fresh.register_load_state_dict_pre_hook(rename)
    fresh.register_load_state_dict_post_hook(lambda o: calls.append(("load-post", o.counters["updates"])))
    fresh.load_state_dict(state)
    assert calls[1:] == [("load-pre", True), ("load-post", 1)]
    assert fresh.scalars == opt.scalars


def test_help_shows_every_hyperparameter_with_its_default_range_and_meaning():
    for name in sam_plugins.available():
        cls = sam_plugins.get(name)
        doc = " ".join(cls.__doc__.split())
        assert "Args:" in doc
        for h in cls.hyperparameters:
            scope = ", per group" if h.per_group else ""
            assert f"{h.name} ({h.kind.__name__}, default {h.default!r}{scope}): {h.help}. Allowed: {h.allowed()}." \
                in doc, (name, h.name)
        for keyword in ("params:", "base:", "model:", "grad_scaler:", "distributed:", "group_keys:", "**base_kwargs:"):
            assert keyword in doc, (name, keyword)


def test_with_defaults_changes_only_the_named_defaults_and_validates_them():
    changed = with_defaults(COMMON, rho=0.5, adaptive=True)
    assert [(h.name, h.default) for h in changed] == [
        (h.name, {"rho": 0.5, "adaptive": True}.get(h.name, h.default)) for h in COMMON]
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['rhoo'\]"):
        with_defaults(COMMON, rhoo=0.5)
    with pytest.raises(ValueError, match=r"rho=-1 is invalid; allowed: a float in \(0\.0, inf\)"):
        with_defaults(COMMON, rho=-1)
