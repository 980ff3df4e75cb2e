"""`zerotune sweep status`: what a sweep's storage says, with or without a live cluster."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sweeps.layout import SweepDir, TrialState
from trainer.storage import join
from zerotune.errors import StorageError


def locate_sweep(sweep: str, *, storage: str) -> str:
    """The sweep directory `sweep` names: a directory/URI itself, or a name under `storage`."""
    for candidate in (sweep, join(storage, sweep)):
        if SweepDir(candidate).exists():
            return candidate
    raise StorageError(
        f"no sweep at {sweep!r} (nor under {storage!r})",
        field="sweep",
        fix="pass the sweep directory, or its name with --storage",
    )


def saved_config(sweep: SweepDir):
    """The config a sweep was run with, as stored with it."""
    from sweeps.config import load_config

    return load_config(raw=sweep.read(sweep.config))


def sweep_status(sweep: str, *, storage: str) -> dict:
    from sweeps.results.collect import collect

    found = SweepDir(locate_sweep(sweep, storage=storage))
    # Trials are re-read every time (a resumed sweep may be running);
    # timing facts only the run knew come from the summary.
    saved = found.read(found.summary, {})
    status = {**saved, **collect(found.uri, cfg=saved_config(found), finished=bool(saved))}
    for trial in status["trials"]:
        trial["progress"] = _progress(found, trial)
    refit = found.latest_refit()
    if refit is not None and "refit" not in status:  # its test score, shown beside the cross-validated one
        status["refit"] = found.read(refit.metrics)
    return status


def watch_status(sweep: str, *, storage: str, interval_s: float, show: Callable[[dict], None]) -> dict:
    """`show` the sweep's status now, and again each time it changes (read every `interval_s`), until no run writes
    it any more (sweeps.lease: no live claim; a killed run's claim goes stale after storage.lease_timeout_s).
    Returns the last status."""
    found = SweepDir(locate_sweep(sweep, storage=storage))
    timeout_s = saved_config(found).storage.lease_timeout_s
    shown = None
    while True:
        status = sweep_status(found.uri, storage=storage)
        seen = json.dumps(status, sort_keys=True, default=str)
        if seen != shown:
            show(status)
            shown = seen
        if not being_written(found, timeout_s=timeout_s, now=time.time()):
            return status
        time.sleep(interval_s)


def being_written(sweep: SweepDir, *, timeout_s: float, now: float) -> bool:
    """A run holds the sweep's lease and its heartbeat is fresh (sweeps.lease)."""
    from sweeps.lease import Claim
    from trainer.storage import read_json

    for path in sweep.lease_claims():
        try:
            claim = Claim.from_json(read_json(path))
        except (StorageError, KeyError, TypeError):  # released since listed, or being written
            continue
        if claim.held and claim.live(now, timeout_s):
            return True
    return False


def _progress(sweep: SweepDir, trial: dict) -> dict | None:
    """Where a trial that has not ended got to (fold, epoch, optimizer step), from its fit's progress record."""
    if trial["state"] not in (TrialState.UNFINISHED, TrialState.INTERRUPTED):
        return None
    try:
        progress = sweep.trial(trial["trial_id"]).records.progress()
    except StorageError:  # being written, or damaged: the rest of the status still shows
        return None
    return {**progress.to_json(), "where": progress.where()} if progress else None
