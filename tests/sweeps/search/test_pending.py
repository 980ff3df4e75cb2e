"""sweeps/search/pending.py: which trials wait for resources, and the reason `sweep status` shows."""

import time

from sweeps.layout import SweepDir
from sweeps.search.pending import STALE_S, read_waiting, waiting_record

ASKS = [{"CPU": 1.0}, {"CPU": 1.0}]


def _group(state="NO_RESOURCES"):
    return {"bundles": {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}, "stats": {"scheduling_state": state}}


def _record(trials, *, started=(), groups=()):
    return waiting_record(
        trials,
        started=lambda t: t in started,
        asks=ASKS,
        pending_groups=list(groups),
        free={"CPU": 0.0, "memory": 1e9},
        total={"CPU": 1.0},
        ceiling="cluster ceiling (autoscaler): 4 x cpu1 (CPU 1)",
        requested=True,
    )


def test_trials_whose_worker_group_is_not_placed_wait_with_the_reason():
    trials = [("a", "RUNNING"), ("b", "RUNNING"), ("c", "RUNNING"), ("d", "PENDING")]
    # "a" has started a fold; "b" and "c" have not, but only one placement group of this shape waits: the newest.
    record = _record(trials, started={"a"}, groups=[_group(), {"bundles": {0: {"CPU": 4.0}}, "stats": {}}])
    waiting = {t["trial_id"]: t["reason"] for t in record["trials"]}
    assert set(waiting) == {"c", "d"} and record["pending_placement_groups"] == 1
    assert waiting["c"].startswith("waiting for resources: its worker group's placement group is not placed yet")
    assert "asks 2 x (CPU 1)" in waiting["c"] and "CPU 0 free of CPU 1" in waiting["c"]
    assert "(NO_RESOURCES)" in waiting["c"] and "4 x cpu1" in waiting["c"] and "autoscaler was asked" in waiting["c"]
    assert "Tune has not placed its trial actor" in waiting["d"]


def test_nothing_waits_without_a_waiting_placement_group():
    assert _record([("a", "RUNNING")])["trials"] == []


def test_a_stale_record_is_ignored(tmp_path):
    sweep = SweepDir(str(tmp_path / "s"))
    record = _record([("c", "RUNNING")], groups=[_group()])
    sweep.write(sweep.pending, record)
    assert set(read_waiting(sweep)) == {"c"}
    assert read_waiting(sweep, now=time.time() + STALE_S + 1) == {}  # a killed run's record


def test_the_autoscaler_is_asked_for_fewer_trials_as_they_end():
    from sweeps.search.pending import trials_to_ask_for

    # 6 trials, 4 at once: 2 created and running, 4 still to create.
    assert trials_to_ask_for(["RUNNING", "RUNNING"], num_trials=6, concurrent=4) == 4
    # 5 ended, 1 running, none left to create: one trial's worker group, not four.
    statuses = ["TERMINATED"] * 4 + ["ERROR", "RUNNING"]
    assert trials_to_ask_for(statuses, num_trials=6, concurrent=4) == 1
    assert trials_to_ask_for(["TERMINATED"] * 6, num_trials=6, concurrent=4) == 0


def test_the_reason_formats_resources_as_the_ceiling_does():
    # One formatter for the ceiling and the pending record (cluster.capacity): GPUs and custom resources show too.
    from cluster.capacity import format_resources

    record = waiting_record(
        [("c", "RUNNING")],
        started=lambda t: False,
        asks=[{"CPU": 2.0, "GPU": 1.0}],
        pending_groups=[{"bundles": {0: {"CPU": 2.0, "GPU": 1.0}}, "stats": {}}],
        free={"CPU": 0.0},
        total={"CPU": 2.0, "GPU": 0.0, "TPU": 4.0},
        ceiling="c",
        requested=False,
    )
    reason = record["trials"][0]["reason"]
    assert "asks 1 x (CPU 2 GPU 1)" in reason and f"of {format_resources({'CPU': 2.0, 'TPU': 4.0})} now" in reason
    assert "CPU 0 free of CPU 2 TPU 4 now" in reason
