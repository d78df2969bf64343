"""Small helpers shared by the tests."""

from __future__ import annotations

import io
import socket
from typing import Any

import torch


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_equal_nested(a: Any, b: Any, where: str = "state") -> None:
    """Bitwise equality of nested state (tensors with their dtypes, numbers, lists, dicts), naming the first
    place that differs."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal_nested(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def state_bytes(opt: torch.optim.Optimizer) -> bytes:
    """The optimizer's state dict as ``torch.save`` writes it (equal bytes: equal state)."""
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    return buffer.getvalue()


def mse_closure(opt: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, helper: bool = True,
                poison: dict[int, float] | None = None) -> Any:
    """A closure; ``poison`` maps call numbers (1-based) to a loss multiplier (nan, inf) for that call."""
    calls = {"n": 0}

    def closure() -> torch.Tensor:
        calls["n"] += 1
        loss = ((model(x) - y) ** 2).mean()
        if poison and calls["n"] in poison:
            loss = loss * poison[calls["n"]]
        if helper:
            opt.backward(loss)
        else:
            loss.backward()
        return loss

    closure.calls = calls  # type: ignore[attr-defined]
    return closure
