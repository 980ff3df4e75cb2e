"""Checks against the cluster, made before any worker is started."""

from __future__ import annotations

import math

from sweeps.config import SweepConfig
from sweeps.preflight.memory import count_parameters, memory_problems
from sweeps.preflight.model import model_problems
from sweeps.search.space import trial_values
from zerotune.errors import ConfigError


def check_fit(cfg: SweepConfig, *, resources: dict | None, n_train: int, model: bool = True) -> None:
    """Workers fit the cluster (when `resources` is known), the data fits their batches and (unless `model` is
    False: checked already) the settings fit the model; all problems at once."""
    problems = []
    if resources is not None:
        problems += _resource_problems(cfg, resources)
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
    problems += _offload_memory_problems(cfg, resources)
    problems += memory_problems(cfg, resources)
    if problems:
        raise ConfigError(problems)


# Host bytes per parameter that ZeRO-Offload keeps in CPU memory: fp32 weights, gradients and
# Adam's two moments for the optimizer (16), the weights themselves for parameter offload (4).
OFFLOAD_BYTES = {"optimizer": 16, "params": 4}


def _offload_memory_problems(cfg: SweepConfig, resources: dict | None) -> list:
    ds = cfg.deepspeed
    if not (ds.offload_optimizer or ds.offload_params):
        return []
    per_param = OFFLOAD_BYTES["optimizer"] * ds.offload_optimizer + OFFLOAD_BYTES["params"] * ds.offload_params
    need = count_parameters(cfg) * per_param
    if resources is not None and resources.get("memory"):
        have, where = float(resources["memory"]), "the cluster's nodes have"
    else:
        import psutil

        have, where = float(psutil.virtual_memory().available), "this machine has"
    if need <= have:
        return []
    field = "deepspeed.offload_params" if ds.offload_params else "deepspeed.offload_optimizer"
    return [
        (
            field,
            f"ZeRO offload keeps about {need / 2**30:.0f} GiB in host memory ({per_param} bytes x parameters); "
            f"{where} {have / 2**30:.0f} GiB",
            "add nodes (offloaded state is split across them), turn offload off and use GPUs with ZeRO-3, "
            "or pick a smaller model",
        )
    ]


def _resource_problems(cfg: SweepConfig, resources: dict) -> list:
    problems = []
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    need_cpu = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    if need_cpu > cpus:
        problems.append(
            (
                "scaling.num_workers",
                f"{cfg.scaling.num_workers} workers x {cfg.scaling.cpus_per_worker:g} CPU need {need_cpu:g} CPUs; "
                f"the cluster has {cpus:g}",
                f"use scaling.num_workers <= {int(cpus // cfg.scaling.cpus_per_worker)} or add nodes",
            )
        )
    if cfg.scaling.use_gpu and cfg.scaling.num_workers > gpus:
        problems.append(
            (
                "scaling.use_gpu",
                f"{cfg.scaling.num_workers} GPU workers but the cluster has {gpus:g} GPUs",
                "lower scaling.num_workers, add GPU nodes, or set use_gpu: false",
            )
        )
    return problems


def max_concurrent(cfg: SweepConfig, resources: dict) -> int:
    """Trials that fit at once: each holds one worker group."""
    if cfg.search.max_concurrent_trials:
        return cfg.search.max_concurrent_trials
    by_cpu = int(resources.get("CPU", 0)) // (cfg.scaling.num_workers * cfg.scaling.cpus_per_worker)
    fits = by_cpu
    if cfg.scaling.use_gpu:
        fits = min(fits, resources.get("GPU", 0) / cfg.scaling.num_workers)
    return max(1, min(cfg.search.num_trials, math.floor(fits)))
