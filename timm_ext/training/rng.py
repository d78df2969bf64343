"""The random state a run consumes, kept in every epoch checkpoint and put back on ``--resume``, so a resumed run
continues exactly as the uninterrupted one: python, numpy and torch (CPU, CUDA) of every process, and of each
persistent loader worker (augmentations, collate-time Mixup/CutMix run there and keep their state across epochs).

The run itself is seeded once, as timm's train.py seeds it; nothing here draws a random number, so a fresh run is
timm's run. States are stored as tensors (``torch.load(weights_only=True)`` reads them, nothing is unpickled)."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.data.loader import MultiEpochsDataLoader
from torch.utils.data import DataLoader, get_worker_info

logger = logging.getLogger("timm_ext.train")
CHECKPOINT_KEY = "rng_state"
State = dict[str, torch.Tensor]


def capture() -> State:
    """This process's python, numpy and torch CPU generators, each as a fixed-shape tensor."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": torch.tensor([version, *internal], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "numpy": torch.tensor([*np.asarray(keys).tolist(), pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([cached], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }


def apply(state: State) -> None:
    """Set this process's generators to a ``capture()``."""
    python = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((python[0], tuple(python[1:]), gauss if has_gauss else None))
    numpy = state["numpy"].tolist()
    np.random.set_state(("MT19937", np.array(numpy[:-2], dtype=np.uint32), numpy[-2], numpy[-1],
                         float(state["numpy_gauss"][0])))
    torch.set_rng_state(state["torch"])


class WorkerStates:
    """Each worker of a persistent loader records its generators after every batch it makes, into shared memory the
    main process reads at checkpoint time; a restarted worker takes its recorded state back before its first batch."""

    def __init__(self, num_workers: int) -> None:
        self.slots = {key: torch.zeros((num_workers, *t.shape), dtype=t.dtype).share_memory_()
                      for key, t in capture().items()}
        self.recorded = torch.zeros(num_workers, dtype=torch.bool).share_memory_()
        self.resume_from: list[State | None] | None = None

    def attach(self, loader: DataLoader) -> None:
        """Wrap the loader's worker start and collate, before its workers exist."""
        loader.worker_init_fn = functools.partial(_start_worker, self, loader.worker_init_fn)
        loader.collate_fn = functools.partial(_collate_and_record, self, loader.collate_fn)

    def record(self) -> None:
        info = get_worker_info()
        assert info is not None, "record() runs inside a loader worker"
        worker = info.id
        for key, value in capture().items():
            self.slots[key][worker].copy_(value)
        self.recorded[worker] = True

    def states(self) -> list[State | None]:
        return [{key: slot[i].clone() for key, slot in self.slots.items()} if self.recorded[i] else None
                for i in range(len(self.recorded))]


def _start_worker(states: WorkerStates, init: Callable[[int], None] | None, worker_id: int) -> None:
    if init is not None:
        init(worker_id)
    saved = states.resume_from[worker_id] if states.resume_from is not None else None
    if saved is not None:
        apply(saved)
    states.record()


def _collate_and_record(states: WorkerStates, collate: Callable[[list], Any], samples: list) -> Any:
    batch = collate(samples)
    if get_worker_info() is not None:
        states.record()
    return batch


def _data_loader(loader: Any) -> DataLoader:
    """The torch DataLoader under timm's prefetcher (or the loader itself)."""
    return getattr(loader, "loader", loader)


def _persistent(loader: DataLoader) -> bool:
    return loader.num_workers > 0 and loader.persistent_workers


class RunRandomState:
    """The random state of a run: this process's generators and the train loader's worker states, gathered from every
    rank into one checkpoint entry, and put back on resume."""

    def __init__(self, train_loader: Any, eval_loader: Any, seed: int) -> None:
        self.train = _data_loader(train_loader)
        self.loaders = [self.train] + ([_data_loader(eval_loader)] if eval_loader is not None else [])
        self.seed = seed
        self.workers: WorkerStates | None = None
        self.exact = not isinstance(self.train, MultiEpochsDataLoader)  # its workers run ahead into the next epoch
        if self.exact and _persistent(self.train):
            self.workers = WorkerStates(self.train.num_workers)
            self.workers.attach(self.train)

    def gather(self) -> list[dict[str, Any]]:
        """Every rank's state, in rank order (a collective under torch.distributed: all ranks call it)."""
        state: dict[str, Any] = {"process": capture(), "workers": self.workers.states() if self.workers else None}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if not (dist.is_available() and dist.is_initialized()):
            return [state]
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        return states

    def restore(self, saved: list[dict[str, Any]] | None, rank: int, world: int) -> None:
        """Put back what ``gather`` saved. The loaders' first iterators then draw their worker seed from a generator
        of their own: in the uninterrupted run, persistent workers drew it from the global one in an earlier epoch."""
        if saved is None:
            logger.warning("the checkpoint holds no random state (not written by this script): data order and "
                           "augmentations continue as timm's train.py would, not as the uninterrupted run")
            return
        if len(saved) != world:
            logger.warning(f"the checkpoint's random state is of {len(saved)} processes, this run has {world}: "
                           "data order and augmentations do not continue as the uninterrupted run")
            return
        if not self.exact:
            logger.warning("--use-multi-epochs-loader: its workers prefetch across epoch ends, so augmentations do "
                           "not continue as the uninterrupted run")
        state = saved[rank]
        apply(state["process"])
        if "cuda" in state and torch.cuda.is_available():
            cuda = state["cuda"]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        workers = state["workers"]
        if self.workers is not None:
            if workers is not None and len(workers) == self.train.num_workers:
                self.workers.resume_from = workers
            else:
                logger.warning(f"--workers {self.train.num_workers} differs from the checkpoint's "
                               f"{0 if workers is None else len(workers)}: augmentations do not continue as the "
                               "uninterrupted run")
        for loader in self.loaders:
            if _persistent(loader):
                loader.generator = torch.Generator().manual_seed(self.seed)
