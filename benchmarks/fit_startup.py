"""What a fit costs before its first step, phase by phase, for two versions of the code side by side.

`python -m benchmarks.fit_startup --before REV [--rounds N]` checks REV out into a temporary git worktree and runs the
same one-fit job (tiny BERT, 2 Ray Train workers, ZeRO-1, 1 epoch, a fresh embedded Ray each time) with REV's code
and with this tree's, alternating, N rounds. Each run is a fresh process, so every import is paid as in a trial.
The phases come from Ray's own task events (`ray.util.state.list_tasks`) and the fit's start marker:

- controller: the Train controller actor's creation (its process start and imports);
- worker group: first worker actor requested -> the torch process group is up (workers, the synchronisation and
  placement-group-cleaner actors, the preemption watcher where it runs, `init_train_context`);
- first fold setup: imports of DeepSpeed/transformers in the worker, model load, engine build (the start marker);
- fit wall: `run_fits` called -> returned (tokenisation, pre-flight and the epoch included);
- cpu: the machine's busy CPU seconds (/proc/stat) from before Ray starts to after it has shut down, so every
  process of the fit counts, however short-lived: on a shared 2-core machine wall times swing by 20 % between
  identical runs, CPU seconds much less. Run it on an otherwise idle machine.

Writes benchmarks/results/fit_startup.json; the headline is after/before of the medians of fit wall and CPU seconds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "fit_startup.json"
PHASES = ("controller_s", "worker_group_s", "first_fold_setup_s", "fit_wall_s", "cpu_s")


def one_fit(work: Path) -> dict:
    """Child process: one fit on a fresh embedded Ray; its phases in seconds."""
    sys.path.append(str(ROOT / "tests"))  # tiny_models: the tests' random tiny BERT and keyword rows
    import ray

    from cluster.local import connect
    from sweeps.config import load_config
    from sweeps.final.train import run_fits
    from tiny_models import keyword_rows, tiny_bert
    from trainer.records import FitRecords

    model = tiny_bert(work / "bert")
    keyword_rows().to_csv(work / "keywords.csv", index=False)
    raw = {
        "name": "startup",
        "task": "classification",
        "model": {"path": str(model), "max_length": 32},
        "data": {"path": str(work / "keywords.csv")},
        "train": {"batch_size": 8, "epochs": 1, "learning_rate": 1e-3},
        "deepspeed": {"zero_stage": 1},
        "scaling": {"num_workers": 2},
        "storage": {"path": str(work / "runs"), "checkpoint_every_epoch": False},
    }
    cfg = load_config(raw=raw)
    busy = _busy_s()
    connect(num_cpus=3)
    started = time.time()
    (summary,) = run_fits([cfg], export=False, worker_logs=False)
    wall = time.time() - started
    starts = FitRecords(str(Path(summary["metrics_path"]).with_name("records"))).starts()
    phases = _phases()
    ray.shutdown()
    return {
        **phases,
        "first_fold_setup_s": round(starts[0].setup_s, 2),
        "fit_wall_s": round(wall, 2),
        "cpu_s": round(_busy_s() - busy, 1),
    }


def _busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (Linux): all of /proc/stat's cpu line but idle and iowait."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _phases() -> dict:
    from ray.util.state import list_tasks

    events = {}
    for task in list_tasks(detail=True, limit=2000, raise_on_missing_output=False):
        times = {e["state"]: e["created_ms"] / 1000 for e in task.events or []}
        events.setdefault(task.name, []).append(times)

    def first(name: str, state: str) -> float:
        return min(t[state] for t in events[name] if state in t)

    def last(name: str, state: str) -> float:
        return max(t[state] for t in events[name] if state in t)

    controller = first("TrainController.__init__", "FINISHED") - first("TrainController.__init__", "PENDING_ARGS_AVAIL")
    group = last("execute._setup_torch_process_group", "FINISHED") - first(
        "RayTrainWorker.__init__", "PENDING_ARGS_AVAIL"
    )
    return {
        "controller_s": round(controller, 2),
        "worker_group_s": round(group, 2),
        "preemption_watcher": "PreemptionWatcher.__init__" in events,
    }


def _run_child(code_root: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="zt-startup-") as work:
        env = {**os.environ, "PYTHONPATH": str(code_root), "RAY_USAGE_STATS_ENABLED": "0"}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.fit_startup", "--child", work],
            cwd=code_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise SystemExit(f"a fit failed under {code_root}:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def compare(before: str, rounds: int) -> dict:
    """`rounds` x (REV `before`, this tree), alternating; medians, ranges and after/before of fit wall and CPU."""
    rev = subprocess.run(["git", "rev-parse", "--short", before], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory(prefix="zt-before-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), before], cwd=ROOT, check=True)
        # This tree's child module runs in REV's tree: the code under test and the tests' tiny models are REV's.
        (tree / "benchmarks" / "fit_startup.py").write_text(Path(__file__).read_text())
        try:
            runs = {"before": [], "after": []}
            for i in range(rounds):
                for arm, code in (("before", tree), ("after", ROOT)):
                    runs[arm].append(_run_child(code))
                    print(f"round {i + 1}/{rounds} {arm}: {json.dumps(runs[arm][-1])}", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    table = {
        arm: {
            p: {"median": statistics.median(r[p] for r in rs), "range": [min(r[p] for r in rs), max(r[p] for r in rs)]}
            for p in PHASES
        }
        for arm, rs in runs.items()
    }
    ratio = {p: round(table["after"][p]["median"] / table["before"][p]["median"], 3) for p in ("fit_wall_s", "cpu_s")}
    return {
        "before": rev.stdout.strip(),
        "rounds": rounds,
        "phases": table,
        "ratio_after_before": ratio,
        "runs": runs,
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the git revision to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_fit(Path(args.child))), flush=True)
        return
    if not args.before:
        parser.error("--before REV is required")
    from benchmarks.run import _machine  # the machine and package versions every results/*.json carries

    result = {
        "row": "fit_startup",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": _machine(),
        **compare(args.before, args.rounds),
    }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
