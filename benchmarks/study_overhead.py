"""Issue 19's Optuna study storage: what the RDB study costs the driver per trial.

The sweep's searcher driven as Tune drives it (suggest, a result per fold, completion; TPE, 3 folds), 30 trials,
with its study on Optuna's in-memory storage (as before study.db), on study.db under a local sweep directory, and
on object storage (the driver's SQLite file uploaded to an S3-protocol server, moto's, in this process, after each
trial). No training: this is the searcher's own cost, which Tune's loop waits on.

    .venv/bin/python -m benchmarks.study_overhead
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

TRIALS, K = 30, 3


def _result(scores: list[float]) -> dict:
    out = {f"fold{i}_f1_macro": s for i, s in enumerate(scores)}
    return {**out, "objective": sum(scores) / len(scores), "folds_done": len(scores), "folds_total": K}


def _per_trial_s(search) -> float:
    start = time.perf_counter()
    for i in range(TRIALS):
        score = search.suggest(f"t{i}")["learning_rate"] * 100
        for done in range(1, K + 1):
            search.on_trial_result(f"t{i}", _result([score] * done))
        search.on_trial_complete(f"t{i}", _result([score] * K))
    return (time.perf_counter() - start) / TRIALS


def _cfg(storage: str):
    from sweeps.config import load_config

    space = {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "batch_size": [8, 16]}
    raw = {"name": "b", "data": {"path": "x.csv"}, "folds": {"k": K}, "storage": {"path": storage}}
    return load_config(raw={**raw, "search": {"num_trials": TRIALS, "space": space}})


def _in_memory(cfg) -> float:
    import optuna

    from sweeps.search import searcher

    real = searcher.open_study
    searcher.open_study = lambda store, *, direction, sampler, metric: (
        optuna.create_study(direction=direction, sampler=sampler),
        True,
    )
    try:
        return _per_trial_s(searcher.make_searcher(cfg))
    finally:
        searcher.open_study = real


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' S3-protocol server
    from s3_server import start_s3_server
    from sweeps.search.searcher import make_searcher

    tmp = tempfile.mkdtemp()
    memory = _in_memory(_cfg(os.path.join(tmp, "memory")))
    local = _per_trial_s(make_searcher(_cfg(tmp)))
    server = start_s3_server()
    os.environ.update(server.env, XDG_CACHE_HOME=os.path.join(tmp, "cache"))
    try:
        s3 = _per_trial_s(make_searcher(_cfg(server.uri("results"))))
    finally:
        server.stop()
    size = os.path.getsize(os.path.join(tmp, "b", "study.db"))
    print(
        f"per trial ({TRIALS} trials, {K} folds, TPE): in-memory {memory * 1e3:.1f} ms, study.db {local * 1e3:.1f} ms, "
        f"object storage (upload after each trial) {s3 * 1e3:.1f} ms; study.db {size / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()
