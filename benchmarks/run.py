"""`make bench`: the rows of benchmarks/RESULTS.md, side by side in one run.

`python -m benchmarks.run [ROW ...]` runs the named rows (default: all, in order), prints each as a
line of JSON and writes it to benchmarks/results/ROW.json with the machine and package versions.
Rows 2-4 share one pair of sweeps (with and without pruning) when run together.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROWS = ("step_overhead", "trial_overhead", "pruning", "hf_search", "scaling")
OUT = Path(__file__).parent / "results"


def _machine() -> dict:
    from importlib.metadata import version

    import psutil

    return {
        "cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        **{p: version(p) for p in ("torch", "ray", "deepspeed", "transformers", "optuna")},
    }


def run(rows: list[str]) -> dict:
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"error: unknown benchmark row(s) {unknown}; choose from {list(ROWS)}")
    OUT.mkdir(exist_ok=True)
    results, pair = {}, None
    for row in rows:
        print(f"== {row} ==", flush=True)
        started = time.time()
        if row == "step_overhead":
            from benchmarks.step_overhead import step_overhead

            result = step_overhead()
        elif row in ("trial_overhead", "pruning"):
            from benchmarks.sweep_costs import pruning, run_pair, trial_overhead

            pair = pair or run_pair()
            result = trial_overhead(pair["none"]) if row == "trial_overhead" else pruning(pair)
        elif row == "hf_search":
            from benchmarks.hf_search import hf_search

            result = hf_search(zerotune_summary=pair["none"] if pair else None)
        else:
            from benchmarks.scaling import scaling

            result = scaling()
        record = {
            "row": row,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "bench_wall_s": round(time.time() - started, 1),
            "machine": _machine(),
            **result,
        }
        (OUT / f"{row}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        print(json.dumps(record, default=str), flush=True)
        results[row] = record
    return results


def main() -> None:
    run(sys.argv[1:] or list(ROWS))


if __name__ == "__main__":
    main()
