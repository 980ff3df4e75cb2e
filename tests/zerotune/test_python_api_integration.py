"""The README's Python example, run as written against the session's real tiny sweep (conftest.tiny_sweep): its
typed results and DataFrames agree with what `zerotune sweep status` reads, the report is written and the refit's
model predicts. And the job commands' new and old spellings on that sweep's Ray job."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from readme_blocks import python_blocks

pytestmark = pytest.mark.integration


def test_the_readme_example_reads_the_sweep_as_status_does(tiny_sweep):
    from tiny_models import SWEEP_NAME

    _, summary, root, _ = tiny_sweep
    block = (
        python_blocks()[1].replace('"vader-tweets"', repr(SWEEP_NAME)).replace('"./results"', repr(str(root.parent)))
    )
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(block, namespace)
    sweep, trials, folds, report = (namespace[k] for k in ("sweep", "trials", "folds", "report"))

    assert sweep.name == SWEEP_NAME and sweep.best.trial_id == summary["best"]["trial_id"]
    assert sweep.best.mean == pytest.approx(summary["best"]["mean"])
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    assert sorted(trials["trial_id"]) == sorted(by_id)
    for row in trials.itertuples():
        assert row.state == by_id[row.trial_id]["state"] and row.folds_done == by_id[row.trial_id]["folds_done"]
    assert {f"params_{name}" for name in summary["best"]["params"]} <= set(trials.columns)
    assert len(folds) == sum(t["folds_done"] for t in summary["trials"])
    best_folds = folds[folds["trial_id"] == sweep.best.trial_id].sort_values("fold")
    assert list(best_folds["score"]) == pytest.approx(summary["best"]["fold_scores"])
    assert sweep.metric in folds.columns and (folds["n_val"] > 0).all()
    assert Path(report["files"]["html"]).is_file() and Path(report["files"]["md"]).is_file()

    assert sweep.refit["metrics"] == summary["refit"]["metrics"]
    predictions = namespace["predictions"]
    assert len(predictions) == 1 and predictions["label"][0] in {"positive", "negative", "neutral"}
    assert f"{sweep.best.mean:.3f} ± {sweep.best.std:.3f}" in printed.getvalue()


def _cli(args: list[str], ray_head, *, no_color: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_TOKEN": ray_head["token"]}
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args, "--address", ray_head["address"]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_job_logs_are_plain_under_no_color_and_the_old_spelling_still_works(tiny_sweep, ray_head):
    from sweeps.cli.jobs import _without_colour

    _, _, _, job = tiny_sweep
    logs = _cli(["job", "logs", job["id"]], ray_head, no_color=True)
    assert logs.returncode == 0, logs.stderr[-2000:]
    assert "\x1b[" not in logs.stdout and "deprecated" not in logs.stderr
    assert logs.stdout == _without_colour(job["logs"]) and "Running entrypoint" in logs.stdout

    old = _cli(["status", job["id"], "--format", "json"], ray_head, no_color=False)
    assert old.returncode == 0, old.stderr[-2000:]
    assert '"SUCCEEDED"' in old.stdout
    assert "`zerotune status` is deprecated" in old.stderr and "zerotune job status" in old.stderr
