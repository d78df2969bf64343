"""Measurements: time per update, optimizer-side time and operations, parameter-sized buffers, GPU peak,
agreement."""

from __future__ import annotations

import copy
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from .contenders import Backward, Contender, MakeClosure, without_dropout
from .workloads import Workload


@dataclass
class Result:
    """Everything measured for one contender on one workload (times in seconds)."""

    name: str
    family: str
    forwards: float = 0.0
    times: list[float] = field(default_factory=list)
    optimizer_times: list[float] = field(default_factory=list)
    operations: float = float("nan")
    held: float = float("nan")
    peak_pass: float = float("nan")
    peak_probe: float = float("nan")
    gpu_peak_bytes: float = float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        if len(self.times) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return (q3 - q1) / self.median

    @property
    def optimizer_median(self) -> float:
        return statistics.median(self.optimizer_times) if self.optimizer_times else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Counter:
    """Counts closure calls (forward passes) of a contender."""

    def __init__(self) -> None:
        self.calls = 0


def real_closure(work: Workload, model: nn.Module, counter: Counter) -> MakeClosure:
    """The true forward and backward pass on the workload's batch."""

    def make(backward: Backward) -> Callable[[], Tensor]:
        def closure() -> Tensor:
            counter.calls += 1
            with torch.enable_grad():  # some peers call closures under no_grad
                loss = work.compute_loss(model)
                backward(loss)
            return loss

        return closure

    return make


@dataclass
class Gradients:
    """A loss and gradient computed once; closures hand out fresh copies instead of backpropagating."""

    loss: Tensor
    grads: list[Tensor]

    @classmethod
    def of(cls, work: Workload) -> Gradients:
        model = copy.deepcopy(work.model)
        loss = work.compute_loss(model)
        loss.backward()
        return cls(loss.detach(), [p.grad.detach().clone() for p in model.parameters()])

    def install(self, params: list[Tensor]) -> None:
        for p, g in zip(params, torch._foreach_mul(self.grads, 1.0)):
            p.grad = g


def restoring_closure(pre: Gradients, model: nn.Module, opt: torch.optim.Optimizer, counter: Counter,
                      inspect: Callable[[], None] | None = None) -> MakeClosure:
    """A closure with no forward or backward: it installs the precomputed gradient (probes get the loss only),
    so an update's time is the optimizer's own work plus ``counter.calls`` installs."""
    params = list(model.parameters())

    def make(backward: Backward) -> Callable[[], Tensor]:
        def closure() -> Tensor:
            if not getattr(opt, "probing", False):
                counter.calls += 1
                pre.install(params)
            if inspect is not None:
                inspect()
            return pre.loss

        return closure

    return make


def install_time(pre: Gradients, model: nn.Module, device: torch.device, repeats: int) -> float:
    """Median time of one gradient install (subtracted from the optimizer-side time)."""
    params = list(model.parameters())
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        pre.install(params)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def round_robin(entries: list[tuple[Contender, torch.optim.Optimizer, MakeClosure, Counter]], warmup: int,
                repeats: int, device: torch.device) -> list[tuple[list[float], float]]:
    """Times every contender's update in turns (so drift of the machine hits all alike): per contender the
    timed updates and the closure calls per timed update."""
    for contender, opt, make, _ in entries:
        for _ in range(warmup):
            contender.update(opt, make)
    times: list[list[float]] = [[] for _ in entries]
    calls_before = [counter.calls for *_, counter in entries]
    for r in range(repeats):
        for j in range(len(entries)):
            i = (j + r) % len(entries)
            contender, opt, make, _ = entries[i]
            _sync(device)
            start = time.perf_counter()
            contender.update(opt, make)
            _sync(device)
            times[i].append(time.perf_counter() - start)
    return [(t, (counter.calls - before) / repeats)
            for t, before, (*_, counter) in zip(times, calls_before, entries)]


class DispatchCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active and not ``paused``: device-independently, the
    kernels an optimizer launches (on a GPU every operation but a view launches at least one)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.paused = False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if not self.paused:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_operations(contender: Contender, work: Workload, pre: Gradients, updates: int = 2) -> float:
    """Operations dispatched per update outside the closure, counted after ``updates`` warm-up updates
    (lazily allocated state is not part of an update's cost)."""
    model = copy.deepcopy(work.model)
    opt = contender.build(model, work)
    counter = DispatchCounter()
    restoring = restoring_closure(pre, model, opt, Counter())

    def make(backward: Backward) -> Callable[[], Tensor]:
        closure = restoring(backward)

        def paused() -> Tensor:
            counter.paused = True
            try:
                return closure()
            finally:
                counter.paused = False

        return paused

    for _ in range(updates):
        contender.update(opt, make)
    with counter:
        for _ in range(updates):
            contender.update(opt, make)
    return counter.count / updates


def _storage_key(t: Tensor) -> tuple[str, int]:
    return str(t.device), t.untyped_storage().data_ptr()


def _live_storages() -> dict[tuple[str, int], int]:
    """Every floating-point tensor storage Python can reach: (device, address) → bytes (integer tensors,
    such as saved RNG states, are never parameter-sized buffers)."""
    found: dict[tuple[str, int], int] = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), Tensor) and obj.device.type != "meta" and obj.is_floating_point():
            nbytes = obj.untyped_storage().nbytes()
            if nbytes:
                found[_storage_key(obj)] = nbytes
    return found


def _storages_of(tensors: list[Tensor]) -> set[tuple[str, int]]:
    return {_storage_key(t) for t in tensors}


def count_buffers(contender: Contender, work: Workload, pre: Gradients, updates: int = 2) -> tuple[float, float, float]:
    """Parameter-sized buffers alive on the optimizer side, in units of the parameters' bytes: after an update
    (held), and at the most in gradient passes and in probes (seen by the closure once the gradient is in
    place). Counted from every live tensor storage that is not a parameter or a model buffer and did not
    exist before the optimizer was built, so the gradient counts wherever the optimizer parks it."""
    gc.collect()
    before = set(_live_storages())
    model = copy.deepcopy(work.model)
    params = list(model.parameters())
    param_bytes = sum(p.nbytes for p in params)
    opt = contender.build(model, work)
    own = _storages_of(params) | _storages_of(list(model.buffers()))
    passes: list[tuple[bool, float]] = []

    def extra() -> float:
        return sum(n for key, n in _live_storages().items() if key not in before and key not in own) / param_bytes

    measuring = False

    def inspect() -> None:
        if measuring:
            passes.append((bool(getattr(opt, "probing", False)), extra()))

    make = restoring_closure(pre, model, opt, Counter(), inspect)
    for _ in range(updates):
        contender.update(opt, make)
    measuring = True
    contender.update(opt, make)
    held = extra()
    in_passes = [n for probing, n in passes if not probing]
    in_probes = [n for probing, n in passes if probing]
    return held, max(in_passes, default=float("nan")), max(in_probes, default=float("nan"))


def gpu_peak(contender: Contender, work: Workload, updates: int = 2) -> float:
    """Peak bytes allocated for one contender's model, optimizer state and passes over ``updates`` updates."""
    device = next(work.model.parameters()).device
    gc.collect()
    torch.cuda.empty_cache()
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model = copy.deepcopy(work.model)
    opt = contender.build(model, work)
    make = real_closure(work, model, Counter())
    for _ in range(updates):
        contender.update(opt, make)
    _sync(device)
    return float(torch.cuda.max_memory_allocated(device) - start)


def agreement(ours: Contender, peer: Contender, work: Workload, updates: int = 2) -> tuple[float, float]:
    """Run both in float64 without dropout (the peers do not replay dropout masks; float32 noise grows
    quickly through BatchNorm on random data) from the same weights on the same batch, over plain SGD
    at the workload's lr; the largest parameter difference, and the largest parameter change of our run
    (the scale the difference is judged against)."""
    work = dataclasses.replace(work, base="sgd", base_kwargs={"lr": work.base_kwargs["lr"]},
                               batch=tuple(t.double() if t.is_floating_point() else t for t in work.batch))
    model = without_dropout(work.model).double()
    results = []
    for contender in (ours, peer):
        copy_ = copy.deepcopy(model)
        opt = contender.build(copy_, work)
        make = real_closure(work, copy_, Counter())
        for _ in range(updates):
            contender.update(opt, make)
        results.append([p.detach() for p in copy_.parameters()])
    start = [p.detach() for p in model.parameters()]
    difference = max(float((a - b).abs().max()) for a, b in zip(*results))
    change = max(float((a - s).abs().max()) for a, s in zip(results[0], start))
    return difference, change
