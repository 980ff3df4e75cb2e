"""`make bench`: the measurements recorded in benchmarks/RESULTS.md, each printed as JSON.

Each is a separate function so a row can be reproduced alone: `python -m benchmarks.run NAME`.
"""

from __future__ import annotations

import json
import sys


def tfidf_tweets() -> dict:
    from benchmarks.tfidf_baseline import tfidf_baseline

    return tfidf_baseline("examples/classification.vader-tweets.yaml")


def demo_overhead() -> dict:
    """The demo sweep's orchestration share (wall time not spent in train/eval steps)."""
    from sweeps.config import load_config
    from sweeps.run import run_sweep

    cfg = load_config("examples/demo.chatterbot-topics.yaml", ["name=bench-demo-overhead", "storage.path=./results/bench"])
    s = run_sweep(cfg, progress=False)
    return {k: s[k] for k in ("wall_s", "train_eval_s", "orchestration_share", "fold_fits", "states")} | {"best_mean": s["best"]["mean"] if s["best"] else None}


def step_overhead() -> dict:
    from benchmarks.step_overhead import step_overhead as measure

    return measure()


BENCHES = {"tfidf_tweets": tfidf_tweets, "demo_overhead": demo_overhead, "step_overhead": step_overhead}


def main() -> None:
    names = sys.argv[1:] or list(BENCHES)
    for name in names:
        print(json.dumps({"bench": name, **BENCHES[name]()}), flush=True)


if __name__ == "__main__":
    main()
