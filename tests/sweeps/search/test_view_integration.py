"""The console of a sweep through a pipe (`zerotune job submit`: Ray's job log is the driver's stdout and stderr): only
the view's lines (sweeps.search.view.LINE_PATTERNS), each epoch once, then the final summary."""

import re
from collections import Counter

import pytest

from sweeps.cli.tables import sweep_table
from sweeps.search.view import AGAIN, LINE_PATTERNS, is_view_line

pytestmark = pytest.mark.integration


def test_a_piped_sweep_prints_only_view_lines_then_its_summary(tiny_sweep):
    cfg, summary, root, job = tiny_sweep
    # A job's log opens with what Ray's job server writes there before it starts the entrypoint (its own logger's
    # "Runtime env is setting up." and "Running entrypoint for job ..."): not the driver's; the console starts after.
    framing, logs = job["logs"].split(f"Running entrypoint for job {job['id']}: ", 1)
    logs = logs.split("\n", 1)[1]
    assert all("job_manager.py" in line for line in framing.splitlines() if line.strip()), framing
    table = sweep_table(summary)
    assert table in logs, logs[-3000:]
    view, tail = logs.split(table, 1)
    assert not tail.strip(), tail  # the summary is the last thing printed
    lines = [line for line in view.splitlines() if line.strip()]
    chatter = [line for line in lines if not is_view_line(line)]
    assert not chatter, "\n".join(chatter[:20])

    kinds = Counter(next(k for k, p in LINE_PATTERNS.items() if p.fullmatch(line)) for line in lines)
    assert kinds["start"] == kinds["log"] == kinds["refit"] == kinds["refit_done"] == 1, kinds
    states = Counter(t["state"] for t in summary["trials"])
    assert kinds["completed"] == states["completed"] and kinds["pruned"] == states["pruned"], (kinds, states)
    assert kinds["failed"] == states["failed"] == 2, (kinds, states)  # out of memory, diverged

    # Each epoch of each trial's folds once (an epoch that ran again after a worker restart says so).
    epochs = Counter(
        re.match(r"trial (\d+)/\d+ \[[^\]]*\] fold (\d+)/\d+ epoch (\d+)/", line).groups()
        for line in lines
        if LINE_PATTERNS["epoch"].fullmatch(line) and AGAIN not in line
    )
    assert epochs and set(epochs.values()) == {1}, epochs
    assert len({key[:2] for key in epochs}) == summary["fold_fits"]  # every fold fit shows

    # The refit's test score beside the cross-validated estimate, in the view and in the summary.
    metric = cfg.metric
    assert f"  refit on {summary['refit']['n_train']} rows: test {metric} " in table
    log_file = root / "run.log"
    assert log_file.exists() and "RayTrainWorker" in log_file.read_text()  # the workers' own output went there
