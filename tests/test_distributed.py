"""Two CPU processes (gloo) with DDP: replicas stay identical and match the math of one process."""

from __future__ import annotations

import datetime
import math
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from reference import ascend, flat, make_model
from torch.nn.parallel import DistributedDataParallel

import sam_plugins

WORLD = 2
LR = 0.1


def shards() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(WORLD, 6, 3, generator=g, dtype=torch.float64), torch.randn(WORLD, 6, 2, generator=g,
                                                                                   dtype=torch.float64)


def worker(rank: int, port: int, mode: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    torch.set_num_threads(1)
    if mode == "buckets":
        reduce_buckets(rank, out)
        dist.destroy_process_group()
        return
    model = make_model()
    ddp = DistributedDataParallel(model)
    xs, ys = shards()
    x, y = xs[rank], ys[rank]
    local = mode in ("local", "skip")
    variant = "sam" if local else "xsam"
    opt = sam_plugins.create(variant, model.parameters(), lr=LR, rho=0.3,
                             distributed=sam_plugins.Distributed(local_ascent=local))
    passes = []

    def closure():
        with opt.no_sync(ddp):
            loss = ((ddp(x) - y) ** 2).mean()
            opt.backward(loss)
        passes.append(None)
        if mode == "skip" and rank == 1 and len(passes) == 4:  # update 2's perturbed pass, on one replica
            return loss * math.inf
        return loss

    for _ in range(3):
        opt.step(closure)
    torch.save({"params": flat(model), "alpha": opt.scalars.get("alpha"), "counters": dict(opt.counters)},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def bucket_inputs(rank: int) -> list[torch.Tensor]:
    """Mixed dtypes (a bucket cannot mix them), a transposed (non-contiguous) tensor, a scalar."""
    g = torch.Generator().manual_seed(11 + rank)
    return [torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, generator=g),
            torch.randn(3, 6, generator=g).t(), torch.randn((), generator=g, dtype=torch.float64),
            torch.randn(7, generator=g, dtype=torch.float64)]


def reduce_buckets(rank: int, out: str) -> None:
    import sam_plugins.distributed as module

    module.BUCKET_BYTES = 64  # 8 doubles: the 5×3 tensor is a bucket of its own, the last two share one
    tensors = bucket_inputs(rank)
    storages = [t.data_ptr() for t in tensors]
    sam_plugins.Distributed().mean_(tensors)
    assert [t.data_ptr() for t in tensors] == storages
    torch.save({"tensors": tensors, "buckets": [len(b) for b in module._buckets(tensors)]}, f"{out}/rank{rank}.pt")


def run(mode: str, tmp_path) -> list[dict]:
    port = 29500 + os.getpid() % 1000 + {"local": 0, "synced": 1000, "buckets": 2000, "skip": 3000}[mode]
    mp.spawn(worker, args=(port, mode, str(tmp_path)), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_synced_ascent_equals_full_batch_single_process(tmp_path):
    results = run("synced", tmp_path)
    assert torch.equal(results[0]["params"], results[1]["params"])
    assert results[0]["alpha"] == results[1]["alpha"]
    xs, ys = shards()
    x, y = xs.reshape(-1, 3), ys.reshape(-1, 2)
    model = make_model()
    opt = sam_plugins.create("xsam", model.parameters(), lr=LR, rho=0.3)

    def closure():
        loss = ((model(x) - y) ** 2).mean()
        opt.backward(loss)
        return loss

    for _ in range(3):
        opt.step(closure)
    torch.testing.assert_close(results[0]["params"], flat(model), rtol=1e-10, atol=1e-12)
    assert results[0]["alpha"] == opt.scalars["alpha"]


def test_local_ascent_averages_per_replica_sam_directions(tmp_path):
    results = run("local", tmp_path)
    assert torch.equal(results[0]["params"], results[1]["params"])
    xs, ys = shards()
    theta = flat(make_model())
    for _ in range(3):
        directions = [ascend(theta, xs[r], ys[r], 0.3, 1)[1][-1] for r in range(WORLD)]
        theta = theta - LR * sum(directions) / WORLD
    torch.testing.assert_close(results[0]["params"], theta, rtol=1e-10, atol=1e-12)


def test_mean_averages_in_place_across_buckets_of_one_dtype(tmp_path):
    results = run("buckets", tmp_path)
    assert results[0]["buckets"] == [1, 1, 1, 2]
    expected = [(a + b) / 2 for a, b in zip(bucket_inputs(0), bucket_inputs(1))]
    for result in results:
        for got, want in zip(result["tensors"], expected, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6 if want.dtype == torch.float32 else 1e-15)


def test_a_pass_non_finite_on_one_replica_skips_the_update_on_every_replica(tmp_path):
    """Per-replica ascent: rank 1's perturbed loss of update 2 is infinite. Both ranks skip update 2
    together (a lone skip would leave the other rank waiting in the final all-reduce) and end equal to
    two per-replica SAM updates from the start."""
    results = run("skip", tmp_path)
    assert [r["counters"] for r in results] == [{"updates": 2, "skipped": 1}] * 2
    xs, ys = shards()
    theta = flat(make_model())
    for _ in range(2):
        directions = [ascend(theta, xs[r], ys[r], 0.3, 1)[1][-1] for r in range(WORLD)]
        theta = theta - LR * sum(directions) / WORLD
    for result in results:
        torch.testing.assert_close(result["params"], theta, rtol=1e-10, atol=1e-12)
