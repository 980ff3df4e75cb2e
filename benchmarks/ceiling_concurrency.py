"""Trials run at once on an autoscaling-shaped cluster (issue 15): a head with 0 CPUs, a 1-CPU worker type of at most 4
nodes, 1 worker node up when the sweep is submitted. Ray's real autoscaler (v2) with its fake multi-node provider
(real raylets on this machine; tests/cluster/test_capacity_integration.py).

    .venv/bin/python -m benchmarks.ceiling_concurrency [--old]

`--old` runs the concurrency today's code took (from free resources: 1 CPU up, so 1 trial at a time) through
search.max_concurrent_trials; without it, what the ceiling gives. Prints JSON: the concurrency the sweep ran with, the
most trials whose worker groups overlapped (from their fold start markers and fold durations), nodes up, wall time.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main(old: bool) -> dict:
    sys.path[:0] = ["tests", "tests/cluster"]
    import ray
    from ray.autoscaler.sdk import request_resources

    from sweeps.config import load_config
    from sweeps.layout import SweepDir
    from sweeps.search.run import run_sweep
    from test_capacity_integration import autoscaling_head, token_env
    from tiny_models import keyword_rows, tiny_bert

    work = Path(tempfile.mkdtemp(prefix="ceiling-"))
    data = work / "keywords.csv"
    keyword_rows().head(80).to_csv(data, index=False)
    raw = {
        "name": "ceiling-old" if old else "ceiling",
        "seed": 1,
        "model": {"path": str(tiny_bert(work / "bert")), "max_length": 16},
        "data": {"path": str(data)},
        "train": {"batch_size": 8, "epochs": 1},
        "deepspeed": {"zero_stage": 0},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "folds": {"k": 2},
        "search": {"num_trials": 4, "space": {"learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}}},
        "storage": {"path": str(work / "results")},
    }
    if old:
        raw["search"]["max_concurrent_trials"] = 1
    with autoscaling_head() as head, token_env(head["auth"]):
        ray.init(address=head["gcs"], logging_level="WARNING")
        request_resources(bundles=[{"CPU": 1}])  # one worker node up at submit, as the scenario says
        while sum(n["Alive"] and n["Resources"].get("CPU", 0) >= 1 for n in ray.nodes()) < 1:
            time.sleep(0.5)
        request_resources(bundles=[])
        ray.shutdown()
        started = time.monotonic()
        summary = run_sweep(load_config(raw=raw), address=head["gcs"], progress=False)
        wall = time.monotonic() - started
        nodes = sum(n["Alive"] and n["Resources"].get("CPU", 0) >= 1 for n in ray.nodes())
        ray.shutdown()
    sweep = SweepDir(summary["storage"])
    spans = []
    for tid in sweep.trial_ids():
        records = sweep.trial(tid).records
        starts, folds = records.starts(), records.folds()
        if starts:
            end = max(s.time for s in starts) + sum(h.get("time", 0) for h in folds[-1].history) if folds else 0
            spans.append((min(s.time for s in starts), end))
    points = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    at_once = most = 0
    for _, step in points:
        at_once += step
        most = max(most, at_once)
    return {
        "old": old,
        "concurrency": summary.get("concurrency"),
        "trials_overlapping_at_most": most,
        "worker_nodes_up_at_end": nodes,
        "states": summary["states"],
        "wall_s": round(wall, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(old="--old" in sys.argv), indent=2))
