"""Trials waiting for resources, and what they wait for: the record `sweep status` shows them by (layout: pending.json).

A trial waits in one of two places: Tune has not placed its actor yet (Tune's PENDING), or its actor runs and its
Ray Train worker group's placement group is not placed yet (no fold of it has started). Either way the sweep looks
idle from outside; the record says which trials wait, what one trial's worker group asks for, what the cluster has
free now, and the ceiling it can grow to (cluster.capacity). The run refreshes it every few seconds while trials wait,
and empties it when they stop waiting or the run ends; a reader ignores a record older than STALE_S (a killed run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from cluster.capacity import core_resources as _core
from cluster.capacity import format_resources as _fmt
from sweeps.layout import SweepDir
from zerotune.errors import StorageError

EVERY_S = 5.0  # how often the run looks (and rewrites the record while trials wait)
STALE_S = 120.0  # a record not refreshed for this long is from a run that no longer runs


def trials_to_ask_for(statuses: list[str], *, num_trials: int, concurrent: int) -> int:
    """How many trials' worker groups the autoscaler should still be asked for: those Tune has not ended (`statuses`:
    Tune's, of every trial it created) plus those it has yet to create, at most `concurrent`. As trials end this
    falls, so nodes no trial will use are no longer asked for."""
    alive = sum(s in ("PENDING", "RUNNING", "PAUSED") for s in statuses)
    return max(0, min(concurrent, alive + max(0, num_trials - len(statuses))))


def waiting_record(
    trials: Iterable[tuple[str, str]],
    *,
    started: Callable[[str], bool],
    asks: list[dict],
    pending_groups: list[dict],
    free: dict,
    total: dict,
    ceiling: str,
    requested: bool,
) -> dict:
    """The record for `trials` ((trial id, Tune status) pairs). `started(id)`: a fold of the trial has started;
    `pending_groups`: the cluster's placement groups that wait (placement_group_table rows)."""
    shape = sorted(tuple(sorted(_core(b).items())) for b in asks)
    ours = [
        g for g in pending_groups if sorted(tuple(sorted(_core(b).items())) for b in g["bundles"].values()) == shape
    ]
    why = sorted({g.get("stats", {}).get("scheduling_state", "") for g in ours} - {""})
    group = f"{len(asks)} x ({_fmt(asks[0])})" if asks else "nothing"
    trials = list(trials)
    # A running trial with no fold started either waits for its placement group or is still starting its workers;
    # placement groups are placed first come, first served, so the last created of them are the ones that wait.
    unplaced = [t for t, status in trials if status == "RUNNING" and not started(t)]
    unplaced = set(unplaced[max(0, len(unplaced) - len(ours)) :]) if ours else set()
    waiting = []
    for trial_id, status in trials:
        if status == "PENDING":
            where = "Tune has not placed its trial actor yet"
        elif trial_id in unplaced:
            where = "its worker group's placement group is not placed yet" + (f" ({', '.join(why)})" if why else "")
        else:
            continue
        waiting.append({"trial_id": trial_id, "tune_status": status, "where": where})
    ours_n = len(ours)
    for row in waiting:
        row["reason"] = (
            f"waiting for resources: {row['where']}; its worker group asks {group}; the cluster has {_fmt(free)} "
            f"free of {_fmt(total)} now; {ceiling}"
            + ("; the autoscaler was asked for the sweep's nodes" if requested else "")
        )
    return {
        "updated": time.time(),
        "asks": asks,
        "free": _core(free),
        "total": _core(total),
        "ceiling": ceiling,
        "autoscaler_requested": requested,
        "pending_placement_groups": ours_n,
        "trials": waiting,
    }


def read_waiting(sweep: SweepDir, *, now: float | None = None) -> dict[str, str]:
    """Trial id -> why it waits, from a fresh record ({} when there is none, it is stale or cannot be read)."""
    try:
        record = sweep.read(sweep.pending, {})
    except StorageError:
        return {}
    if not record or (now or time.time()) - float(record.get("updated", 0)) > STALE_S:
        return {}
    return {t["trial_id"]: t["reason"] for t in record.get("trials", [])}


def pending_watch(
    sweep_uri: str,
    *,
    asks: list[dict],
    ceiling: str,
    requested: bool,
    every_s: float = EVERY_S,
    ask: Callable[[int], None] | None = None,
    num_trials: int = 0,
    concurrent: int = 0,
):
    """A Tune callback that writes the sweep's pending record while trials wait (see the module docstring), and,
    given `ask` (cluster.scale.requested's: the autoscaler request for that many trials), shrinks the request as
    trials end (trials_to_ask_for). Built here, not at import: reading the record (sweep status) needs no Ray."""
    from ray.tune import Callback

    class PendingWatch(Callback):
        def __init__(self, sweep_uri: str, *, asks: list[dict], ceiling: str, requested: bool, every_s: float):
            self.sweep = SweepDir(sweep_uri)
            self.asks, self.ceiling, self.requested, self.every_s = asks, ceiling, requested, every_s
            self._last, self._waiting, self._started = 0.0, False, set()
            self._asked = concurrent  # the run asked for this many trials' worker groups up front

        def on_step_begin(self, iteration, trials, **info):
            if time.monotonic() - self._last < self.every_s:
                return
            self._last = time.monotonic()
            self.refresh(trials)

        def on_experiment_end(self, trials, **info):
            if self._waiting:
                self._write({"updated": time.time(), "trials": []})

        def refresh(self, trials) -> None:
            import ray

            wanted = trials_to_ask_for([t.status for t in trials], num_trials=num_trials, concurrent=concurrent)
            if ask is not None and wanted < self._asked:
                ask(wanted)
                self._asked = wanted
            live = [(t.trial_id, t.status) for t in trials if t.status in ("PENDING", "RUNNING")]
            if not live:
                return self.on_experiment_end(trials)
            record = waiting_record(
                live,
                started=self._has_started,
                asks=self.asks,
                pending_groups=[g for g in ray.util.placement_group_table().values() if g["state"] == "PENDING"],
                free=ray.available_resources(),
                total=ray.cluster_resources(),
                ceiling=self.ceiling,
                requested=self.requested,
            )
            if record["trials"] or self._waiting:  # rewrite while trials wait; once more when they stop waiting
                self._write(record)
            self._waiting = bool(record["trials"])

        def _has_started(self, trial_id: str) -> bool:
            if trial_id not in self._started:
                try:
                    records = self.sweep.trial(trial_id).records
                    if records.starts() or records.folds():
                        self._started.add(trial_id)
                except StorageError:
                    return False
            return trial_id in self._started

        def _write(self, record: dict) -> None:
            try:
                self.sweep.write(self.sweep.pending, record)
            except (StorageError, OSError):
                pass  # the status is a convenience: the storage watch reports a broken storage

    return PendingWatch(sweep_uri, asks=asks, ceiling=ceiling, requested=requested, every_s=every_s)
