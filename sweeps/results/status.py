"""`zerotune sweep status`: what a sweep's storage says, with or without a live cluster."""

from __future__ import annotations

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
    return status


def _progress(sweep: SweepDir, trial: dict) -> dict | None:
    """Where a trial that has not ended got to (fold, epoch, optimizer step), from its fit's progress record."""
    if trial["state"] not in (TrialState.UNFINISHED, TrialState.INTERRUPTED):
        return None
    try:
        progress = sweep.trial(trial["trial_id"]).records.progress()
    except StorageError:  # being written, or damaged: the rest of the status still shows
        return None
    return {**progress.to_json(), "where": progress.where()} if progress else None
