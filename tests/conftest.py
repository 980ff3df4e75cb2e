"""Shared fixtures: offline Hugging Face, tiny real models, one local Ray cluster per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default: each fit waits on that at start and
# end. Polling faster costs a little CPU and saves ~2.5 s per fit (tests run ~30 fits).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.3")
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
VADER = REPO.parent / "shared" / "data" / "vader"


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from tiny_models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from tiny_models import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def keyword_csv(tmp_path_factory) -> Path:
    """A small, learnable classification set: the label is which word the sentence carries."""
    from tiny_models import keyword_rows

    path = tmp_path_factory.mktemp("data") / "keywords.csv"
    keyword_rows().to_csv(path, index=False)
    return path


@pytest.fixture
def ray_local():
    """A local Ray cluster (2 CPUs for workers + 1 for trial drivers), shut down after the test."""
    import ray

    from cluster.local import connect

    connect(num_cpus=3)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_bert_dir, keyword_csv):
    """ONE real tiny sweep shared by the sweep and report tests (see tiny_models.sweep_raw): completed,
    pruned, out-of-memory and diverged trials, then a refit. Returns (config, summary, sweep directory)."""
    import ray

    from cluster.local import connect
    from sweeps.config import load_config
    from sweeps.run import run_sweep
    from tiny_models import OOM_BATCH, sweep_raw

    cfg = load_config(raw=sweep_raw(tiny_bert_dir, keyword_csv, tmp_path_factory.mktemp("sweep-results")))
    # Workers inherit the environment of the Ray instance: batches of OOM_BATCH rows exhaust an address-space cap.
    faults = {"ZEROTUNE_FAULT_OOM_BATCH": str(OOM_BATCH)}
    os.environ.update(faults)
    try:
        connect(num_cpus=3)
        summary = run_sweep(cfg, progress=False)
    finally:
        for key in faults:
            del os.environ[key]
        ray.shutdown()
    return cfg, summary, Path(summary["storage"])
