"""One rank's view of a fit (Worker), how it is set up, and the per-rank facts the loop needs.

Every rank runs the same number of forward passes and collectives (ZeRO-3 and Train V2 both need
that): the row shards here give every rank the same count.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from trainer import faults, packing
from trainer.data import Encoded, collate
from trainer.packing import Packed, collate_packed
from trainer.records import FitRecords
from trainer.spec import TIMINGS, FitSpec
from zerotune.errors import ZerotuneError


@dataclass(frozen=True)
class Worker:
    """Fixed for the whole fit: the spec, the data and folds, this rank, its device, its records and fault hook."""

    fit: int  # its index among the worker group's fits
    spec: FitSpec
    encoded: Encoded
    folds: list[tuple[np.ndarray, np.ndarray]]
    rank: int
    world: int
    device: object  # torch.device
    bf16: bool  # the device supports bf16
    records: FitRecords | None  # None: this fit keeps no records
    hook: faults.StepHook | None  # test faults around each training step; None in ordinary fits
    rss_start_mb: float  # resident memory after imports, before any model: what the memory figures are above

    @property
    def k(self) -> int:
        return len(self.folds)

    @property
    def lead(self) -> bool:
        """Rank 0 writes the records and says what happens."""
        return self.rank == 0

    def inputs(self, rows: np.ndarray | Packed) -> dict:
        """One batch of `rows`, padded (or packed: data.packing) and on this rank's device."""
        if isinstance(rows, Packed):
            flat = self.spec.model.attn_implementation == "flash_attention_2"  # varlen reads one flattened row
            batch = collate_packed(self.encoded, rows, flat=flat)
        else:
            batch = collate(self.encoded, rows, self.spec.task)
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}

    def token_mask(self, rows: np.ndarray | Packed, inputs: dict):
        """Which positions of a batch's `inputs` are tokens rather than padding (what an epoch counts)."""
        return packing.token_mask(self.encoded, rows, inputs) if isinstance(rows, Packed) else inputs["attention_mask"]

    def batches_per_epoch(self, train_rows: np.ndarray) -> int:
        """Micro-batches per rank in each epoch over `train_rows` (packed sequences under data.packing). Fewer rows
        (or sequences) than ranks would train nothing and report a loss of 0: refused (pre-flight refuses it first)."""
        packed = bool(self.encoded.pack_to)
        units = packing.sequence_count(self.encoded, train_rows) if packed else len(train_rows)
        batches = batches_per_rank(units, self.world, self.spec.train.batch_size)
        if not batches:  # a ZerotuneError, not a ConfigError: it crosses from the worker to the driver (pickled)
            what = f"{units} packed sequences of up to {self.encoded.pack_to} tokens" if packed else f"{units} rows"
            raise ZerotuneError(
                f"{what} cannot feed {self.world} ranks: every rank would train on none",
                field="data.packing" if packed else "scaling.num_workers",
                fix="use fewer workers" + (", a smaller model.max_length, or data.packing: false" if packed else ""),
            )
        return batches

    def epoch_batches(self, train_rows: np.ndarray, *, fold: int, epoch: int) -> list[np.ndarray | Packed]:
        """This rank's micro-batches of one epoch over `train_rows`, in a seeded order (rows, or Packed)."""
        at = {"seed": self.spec.seed, "fold": fold, "epoch": epoch, "rank": self.rank, "world": self.world}
        batch = self.spec.train.batch_size
        if self.encoded.pack_to:
            return packing.epoch_batches(self.encoded, train_rows, batch=batch, **at)
        rows = epoch_rows(train_rows, **at)
        return [rows[i : i + batch] for i in range(0, len(rows), batch)]


@dataclass
class Timings:
    """Seconds this worker group spent per phase (spec.TIMINGS), summed over its folds."""

    seconds: dict = field(default_factory=lambda: dict.fromkeys(TIMINGS, 0.0))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def now(self) -> dict:
        return dict(self.seconds)


def setup(fit, *, index: int) -> Worker:
    """This rank's Worker for fit `index` of the group (a trainer.launch.Fit)."""
    # Library chatter (DeepSpeed logs to stdout) goes to stderr: the driver's stdout carries data (--format json).
    sys.stdout.flush()
    os.dup2(2, 1)
    import ray
    import ray.train
    import torch

    spec: FitSpec = fit.spec
    encoded = fit.encoded
    if isinstance(encoded, ray.ObjectRef):
        encoded = ray.get(encoded)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device(f"cuda:{ctx.get_local_rank()}") if spec.use_gpu else torch.device("cpu")
    if spec.use_gpu:
        torch.cuda.set_device(device)
    else:
        skip_cpu_inference_kernel()
    return Worker(
        fit=index,
        spec=spec,
        encoded=encoded,
        folds=fit.folds,
        rank=rank,
        world=world,
        device=device,
        bf16=spec.use_gpu and torch.cuda.is_bf16_supported(),
        records=FitRecords(spec.records_uri) if spec.records_uri else None,
        hook=faults.step_hook(spec.records_uri, rank=rank),
        rss_start_mb=rss_mb(),
    )


def skip_cpu_inference_kernel() -> None:
    """Keep DeepSpeed from JIT-compiling its CPU shared-memory all-reduce kernel.

    DeepSpeed's torch backend builds it at init on CPU, but only `inference_all_reduce` uses it; training
    all-reduces go through torch.distributed (gloo). The build needs a C++ toolchain and delays the first
    fit of every fresh virtualenv. Marking the op incompatible is DeepSpeed's own "skip" path.
    """
    deepspeed = import_deepspeed()
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def import_deepspeed():
    """`import deepspeed`, without the MLflow that DeepSpeed's autotuner imports whenever it is installed (to log
    autotuning runs, which a fit never starts): that import is 2-7 s of every worker's start here where the
    `tracking` extra is installed (benchmarks/RESULTS.md, section 2a). mlflow imports as usual afterwards."""
    if "deepspeed" in sys.modules or "mlflow" in sys.modules:
        import deepspeed

        return deepspeed
    sys.modules["mlflow"] = None  # `import mlflow` raises ImportError meanwhile, which DeepSpeed catches
    try:
        import deepspeed
    finally:
        if "mlflow" in sys.modules and sys.modules["mlflow"] is None:
            del sys.modules["mlflow"]
    return deepspeed


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory_by_rank(rss_start_mb: float, world: int) -> dict:
    """Each rank's resident memory at start and its peak so far (MiB): what ZeRO partitioning should shrink; on a
    GPU also the peak GPU memory torch's allocator handed out (what the pre-flight memory estimate predicts).

    Collective: every rank calls this.
    """
    import resource

    import torch
    import torch.distributed as dist

    mine = [round(rss_start_mb, 1), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        mine.append(round(torch.cuda.max_memory_allocated() / 2**20, 1))
    everyone = [mine] * world
    if dist.is_initialized() and world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    out = {"rss_start_mb": [m[0] for m in everyone], "peak_rss_mb": [m[1] for m in everyone]}
    if all(len(m) == 3 for m in everyone):
        out["peak_gpu_mb"] = [m[2] for m in everyone]
    return out | where_by_rank(world)


def where_by_rank(world: int) -> dict:
    """Which process on which Ray node each rank is (pid, node id; None outside Ray): a record then shows where a
    fold ran, across nodes and across worker-group restarts. Collective: every rank calls this."""
    import os

    import ray
    import torch.distributed as dist

    mine = [os.getpid(), ray.get_runtime_context().get_node_id() if ray.is_initialized() else None]
    everyone = [mine] * world
    if dist.is_initialized() and world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    return {"pid": [m[0] for m in everyone], "node_id": [m[1] for m in everyone]}


def batches_per_rank(n_rows: int, world: int, batch: int) -> int:
    per_rank = n_rows // world
    return max(1, math.ceil(per_rank / batch)) if per_rank else 0


def epoch_rows(train_rows: np.ndarray, *, seed: int, fold: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's shard of a seeded shuffle; every rank gets the same count."""
    perm = np.random.default_rng([seed, fold, epoch]).permutation(train_rows)
    per_rank = len(perm) // world
    return perm[rank::world][:per_rank]


def all_reduce_mean(value, world: int) -> float:
    """The mean of a scalar tensor over the ranks (collective)."""
    import torch.distributed as dist

    seen = value.detach().float().reshape(1).clone()
    if dist.is_initialized():
        dist.all_reduce(seen)
        seen /= world
    return float(seen.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
