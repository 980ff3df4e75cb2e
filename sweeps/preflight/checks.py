"""Checks against the cluster, made before any worker is started."""

from __future__ import annotations

import logging

from cluster.capacity import Capacity
from sweeps.config import SweepConfig
from sweeps.preflight.memory import count_parameters, memory_problems
from sweeps.preflight.model import model_problems
from sweeps.search.space import trial_values
from trainer.launch import worker_bundle as _bundle
from zerotune.errors import ConfigError

log = logging.getLogger(__name__)


def check_fit(cfg: SweepConfig, *, resources: dict | Capacity | None, n_train: int, model: bool = True) -> None:
    """Workers fit the cluster's ceiling (when known: `resources`, a Capacity or plain totals), the data fits their
    batches and (unless `model` is False: checked already) the settings fit the model; all problems at once."""
    problems = []
    capacity = as_capacity(resources)
    resources = capacity.totals() if capacity is not None else None
    if capacity is not None:
        problems += _resource_problems(cfg, capacity)
    batches = trial_values(cfg, "batch_size")
    per_rank = n_train // cfg.scaling.num_workers
    too_big = [b for b in batches.values if b > per_rank]
    if too_big and per_rank >= 1:
        problems.append(
            (
                batches.field,
                f"batch size {max(too_big)} exceeds the {per_rank} training rows "
                f"each of {cfg.scaling.num_workers} workers gets",
                f"use batch sizes <= {per_rank}",
            )
        )
    elif per_rank < 1:
        problems.append(
            (
                "scaling.num_workers",
                f"{n_train} training rows cannot feed {cfg.scaling.num_workers} workers",
                "use fewer workers or more data",
            )
        )
    if model:
        problems += model_problems(cfg)
    problems += _offload_memory_problems(cfg, capacity)
    problems += memory_problems(cfg, resources)
    if problems:
        raise ConfigError(problems)


# Host bytes per parameter that ZeRO-Offload keeps in CPU memory: fp32 weights, gradients and
# Adam's two moments for the optimizer (16), the weights themselves for parameter offload (4).
OFFLOAD_BYTES = {"optimizer": 16, "params": 4}


def _offload_memory_problems(cfg: SweepConfig, capacity: Capacity | None) -> list:
    """ZeRO splits the offloaded state evenly over the workers: the node type with the most memory must hold the
    share of the workers it can take. Skipped, with a note, where no node type's memory is known."""
    ds = cfg.deepspeed
    if not (ds.offload_optimizer or ds.offload_params):
        return []
    per_param = OFFLOAD_BYTES["optimizer"] * ds.offload_optimizer + OFFLOAD_BYTES["params"] * ds.offload_params
    need = count_parameters(cfg) * per_param
    have = capacity.largest_memory() if capacity is not None else None
    if have is None:
        log.warning(
            "pre-flight: host memory for ZeRO offload not checked (about %.0f GiB over all workers): the cluster's "
            "node memory is unknown",
            need / 2**30,
        )
        return []
    node = max((t for t in capacity.node_types if t.resources.get("memory")), key=lambda t: t.resources["memory"])
    one = worker_bundle(cfg)
    held = min((int(node.resources.get(k, 0) // v) for k, v in one.items() if v), default=cfg.scaling.num_workers)
    ranks = max(1, min(cfg.scaling.num_workers, held))
    share = need * ranks / cfg.scaling.num_workers
    if share <= have:
        return []
    field = "deepspeed.offload_params" if ds.offload_params else "deepspeed.offload_optimizer"
    return [
        (
            field,
            f"ZeRO offload keeps about {need / 2**30:.0f} GiB in host memory ({per_param} bytes x parameters), "
            f"{share / 2**30:.0f} GiB of it on a node with {ranks} of the {cfg.scaling.num_workers} workers; the "
            f"largest node has {have / 2**30:.0f} GiB",
            "use more workers on more nodes (offloaded state is split across workers), turn offload off and use GPUs "
            "with ZeRO-3, or pick a smaller model",
        )
    ]


def as_capacity(resources: dict | Capacity | None) -> Capacity | None:
    """Plain totals (a fixed pool, as callers that only know `ray.cluster_resources()` pass) or a Capacity."""
    return Capacity.fixed(resources) if isinstance(resources, dict) else resources


def describe_resources(resources: dict | Capacity) -> str:
    """The pre-flight line on what the sweep was checked against, naming where the ceiling came from."""
    if isinstance(resources, dict):
        return f"cluster has {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs (live resources)"
    up = resources.up
    return f"{resources.describe()}; up now: {up.get('CPU', 0):g} CPUs, {up.get('GPU', 0):g} GPUs"


def worker_bundle(cfg: SweepConfig) -> dict:
    """What one Ray Train worker asks for (trainer.launch owns it)."""
    return _bundle(cfg.scaling)


def trial_bundles(cfg: SweepConfig) -> list[dict]:
    """One trial's resources: its worker group (its Tune actor holds none: sweeps.search.trial)."""
    return [worker_bundle(cfg)] * cfg.scaling.num_workers


def _resource_problems(cfg: SweepConfig, capacity: Capacity) -> list:
    """Against the ceiling: a worker group that fits nodes the cluster can start is accepted though none is up."""
    problems = []
    workers, cpus = cfg.scaling.num_workers, cfg.scaling.cpus_per_worker
    one = worker_bundle(cfg)
    where = capacity.describe()
    if cfg.scaling.use_gpu and not capacity.fits_one(one):
        problems.append(
            (
                "scaling.use_gpu",
                f"{workers} GPU workers but no node of the cluster has a GPU and {cpus:g} CPUs ({where})",
                "lower scaling.cpus_per_worker, add GPU nodes, or set use_gpu: false",
            )
        )
    elif not capacity.fits_one(one):
        most = max((t.resources.get("CPU", 0) for t in capacity.node_types), default=0)
        problems.append(
            (
                "scaling.cpus_per_worker",
                f"a worker asks for {cpus:g} CPUs; the largest node has {most:g} ({where})",
                f"use scaling.cpus_per_worker <= {most:g}, or add larger nodes",
            )
        )
    elif capacity.groups_that_fit(trial_bundles(cfg), limit=1) < 1:
        totals = capacity.totals()
        fits = _workers_that_fit(cfg, capacity)
        gpus = f" and {workers:g} GPUs" if cfg.scaling.use_gpu else ""
        problems.append(
            (
                "scaling.num_workers",
                f"{workers} workers x {cpus:g} CPU need {workers * cpus:g} CPUs{gpus}; "
                f"the cluster can have {totals.get('CPU', 0):g} CPUs, {totals.get('GPU', 0):g} GPUs ({where})",
                f"use scaling.num_workers <= {fits} or add nodes (raise the autoscaler's max workers)",
            )
        )
    return problems


def _workers_that_fit(cfg: SweepConfig, capacity: Capacity) -> int:
    """The largest worker group the ceiling holds."""
    n = cfg.scaling.num_workers
    while n > 0 and capacity.groups_that_fit([worker_bundle(cfg)] * n, limit=1) < 1:
        n -= 1
    return n


def max_concurrent(cfg: SweepConfig, resources: dict | Capacity, *, done: int = 0) -> int:
    """Trials to run at once: at most the trials left (search.num_trials less the `done` ones a resumed sweep keeps);
    search.max_concurrent_trials where set (the user's number: nodes added by hand later are used, trials beyond
    what is up wait as pending), else what the ceiling fits (each trial holds one worker group; an unbounded
    ceiling, an autoscaler whose node types cannot be read, fits them all). Never 0: a trial that does not fit
    waits for resources."""
    left = max(1, cfg.search.num_trials - done)
    if cfg.search.max_concurrent_trials:
        return min(left, cfg.search.max_concurrent_trials)
    return trials_the_ceiling_fits(cfg, resources, limit=left)


def trials_the_ceiling_fits(cfg: SweepConfig, resources: dict | Capacity, *, limit: int) -> int:
    """Trials' worker groups the ceiling holds at once, up to `limit` (at least 1): what the autoscaler is asked for,
    never more than it could start."""
    return max(1, as_capacity(resources).groups_that_fit(trial_bundles(cfg), limit=limit))
