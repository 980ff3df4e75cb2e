"""sweeps/results/collect.py: a trial's state and reason come from its records (one classifier),
the best from the registry."""

from types import SimpleNamespace

import pytest

from sweeps.config import load_config
from sweeps.layout import Params, SweepDir
from sweeps.results.collect import collect, trial_record
from trainer.records import FoldRecord, OomRecord


def _cfg(tmp_path, metric=None):
    search = {"num_trials": 4, "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}}
    if metric:
        search["metric"] = metric
    return load_config(
        raw={
            "name": "s",
            "data": {"path": "x.csv"},
            "folds": {"k": 3},
            "search": search,
            "storage": {"path": str(tmp_path)},
        }
    )


def _fold(fold, score, diverged=None):
    return FoldRecord(
        fold=fold,
        epochs_run=1,
        best_epoch=0,
        metrics={"f1_macro": score, "eval_loss": score},
        history=[{"time": 2.0}],
        val_sha="x",
        trainable_params=10,
        total_params=10,
        diverged=diverged,
    )


def _trial(sweep, tid, scores, **kw):
    trial = sweep.trial(tid)
    trial.write_params(Params(params={"learning_rate": 1e-3}, started=1.0))
    for i, s in enumerate(scores):
        trial.records.write_fold(_fold(i, s, kw.get("diverged") if i == len(scores) - 1 else None))
    if "oom" in kw:
        trial.records.write_oom(kw["oom"])
    return trial


def _record(sweep, tid, result=None):
    return trial_record(sweep, tid, metric="f1_macro", k=3, result=result, use_gpu=False, workers=2)


def test_states_and_reasons_come_from_the_records(tmp_path):
    sweep = SweepDir.of(_cfg(tmp_path))
    _trial(sweep, "done", [0.5, 0.6, 0.7])
    _trial(
        sweep, "oom", [], oom=OomRecord(fold=0, epoch=1, step=4, rank=1, error="RuntimeError: can't allocate memory")
    )
    _trial(sweep, "nan", [0.4], diverged={"fold": 0, "epoch": 0, "step": 3, "loss": "nan"})
    _trial(sweep, "pruned", [0.1])
    _trial(sweep, "running", [0.2])
    # The error Tune holds for a failed trial says nothing the classifier reads: the records decide.
    told = SimpleNamespace(metrics={"folds_done": 0}, error=RuntimeError("trial failed"), path="")
    rows = {
        "done": _record(sweep, "done"),
        "oom": _record(sweep, "oom", told),
        "nan": _record(sweep, "nan", told),
        "pruned": _record(sweep, "pruned", SimpleNamespace(metrics={"folds_done": 1}, error=None, path="")),
        "running": _record(sweep, "running"),
        "crash": _record(
            sweep, "crash", SimpleNamespace(metrics={}, error=ValueError("bad tokenizer\nTraceback ..."), path="")
        ),
    }
    assert {k: (r["state"], r["reason"]) for k, r in rows.items()} == {
        "done": ("completed", None),
        "oom": ("failed", "out-of-memory at fold 0 epoch 1 step 4"),
        "nan": ("failed", "diverged at fold 0 epoch 0 step 3 (loss nan)"),
        "pruned": ("pruned", "stopped after 1 of 3 folds"),
        "running": ("unfinished", None),
        "crash": ("failed", "error: bad tokenizer"),
    }
    assert (
        rows["done"]["mean"] == pytest.approx(0.6)
        and rows["done"]["duration_s"] == 6.0
        and rows["done"]["worker_seconds"] == 12.0
    )


@pytest.mark.parametrize(("metric", "best"), [("f1_macro", "high"), ("eval_loss", "low")])
def test_the_best_completed_trial_follows_the_metrics_direction(tmp_path, metric, best):
    cfg = _cfg(tmp_path, metric)
    sweep = SweepDir.of(cfg)
    _trial(sweep, "high", [0.8, 0.8, 0.8])
    _trial(sweep, "low", [0.2, 0.2, 0.2])
    _trial(sweep, "higher-but-pruned", [0.9])
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    summary = collect(sweep.uri, cfg=cfg)
    assert summary["best"]["trial_id"] == best and [f["fold"] for f in summary["best"]["folds"]] == [0, 1, 2]
    assert summary["states"]["completed"] == 2 and summary["fold_fits"] == 7


@pytest.mark.parametrize(
    ("record", "content"),
    [
        ("records/fold-1.json", '{"fold": 1, "epochs_run": 1, "metr'),  # cut short: not JSON
        ("records/fold-0.json", '{"fold": 0}'),  # JSON, but not a whole record
        ("records/oom-rank0.json", ""),  # created, never written
        ("params.json", '{"params": {"learning_rate"'),
    ],
)
def test_a_damaged_record_marks_its_trial_unreadable_and_the_others_still_show(tmp_path, record, content):
    from pathlib import Path

    from sweeps.results.status import sweep_status

    cfg = _cfg(tmp_path)
    sweep = SweepDir.of(cfg)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    _trial(sweep, "good", [0.5, 0.6, 0.7])
    _trial(sweep, "damaged", [0.4, 0.5])
    Path(sweep.trial("damaged").uri, record).write_text(content)
    status = sweep_status(sweep.uri, storage=str(tmp_path))
    rows = {t["trial_id"]: t for t in status["trials"]}
    assert rows["good"]["state"] == "completed" and status["best"]["trial_id"] == "good"
    assert rows["damaged"]["state"] == "unreadable" and record.rsplit("/", 1)[-1] in rows["damaged"]["reason"]
    assert status["states"]["unreadable"] == 1 and set(rows["damaged"]) == set(rows["good"])


def test_a_finished_sweeps_trial_with_a_damaged_fold_record_shows_as_unreadable(tmp_path):
    """A finished sweep leaves out trial directories that Tune does not know and where no fold finished; one whose
    fold record cannot be read is kept (as unreadable), not a crash."""
    from pathlib import Path

    from sweeps.results.status import sweep_status

    cfg = _cfg(tmp_path)
    sweep = SweepDir.of(cfg)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    sweep.write(sweep.summary, {"name": cfg.name})  # the sweep has ended
    _trial(sweep, "good", [0.5, 0.6, 0.7])
    _trial(sweep, "damaged", [0.4])
    Path(sweep.trial("damaged").uri, "records", "fold-0.json").write_text('{"fold": 0, "met')
    rows = {t["trial_id"]: t["state"] for t in sweep_status(sweep.uri, storage=str(tmp_path))["trials"]}
    assert rows == {"good": "completed", "damaged": "unreadable"}


def _saved_tune_state(sweep, **trials):
    """Tune's saved experiment state (what `sweep status` reads without a cluster): trial id -> (status, last
    result), in Tune's own format (each trial's JSON as a string)."""
    import json
    from pathlib import Path

    rows = [
        [json.dumps({"trial_id": tid, "status": status}), json.dumps({"last_result": last})]
        for tid, (status, last) in trials.items()
    ]
    path = Path(sweep.tune) / "experiment_state-2026-01-01_00-00-00.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"trial_data": rows}))


def _results(**metrics):
    """What a ResultGrid holds per trial (Tune's Result: metrics, error, path)."""
    return [SimpleNamespace(metrics={"trial_id": tid, **m}, error=None, path="") for tid, m in metrics.items()]


def test_trials_running_when_the_sweep_is_interrupted_are_interrupted_not_pruned(tmp_path):
    cfg = _cfg(tmp_path)
    sweep = SweepDir.of(cfg)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    _trial(sweep, "done", [0.5, 0.6, 0.7])
    _trial(sweep, "pruned", [0.1])
    _trial(sweep, "running", [0.4])  # Ctrl+C during its second fold
    one_fold = {"folds_done": 1, "objective": 0.4}
    _saved_tune_state(
        sweep,
        done=("TERMINATED", {"folds_done": 3}),
        pruned=("TERMINATED", one_fold),
        running=("RUNNING", one_fold),
        waiting=("PENDING", {}),  # never started: no directory
    )
    grid = _results(done={"folds_done": 3}, pruned=one_fold, running=one_fold, waiting={})
    summary = collect(sweep.uri, cfg=cfg, grid=grid, interrupted=True)
    states = {t["trial_id"]: t["state"] for t in summary["trials"]}
    assert states == {"done": "completed", "pruned": "pruned", "running": "interrupted", "waiting": "interrupted"}
    assert summary["interrupted"] is True and summary["best"]["trial_id"] == "done"
    sweep.write(sweep.summary, summary)
    # `sweep status` afterwards (no cluster): the same, from Tune's saved state and the saved summary.
    status = collect(sweep.uri, cfg=cfg, finished=True)
    assert {t["trial_id"]: t["state"] for t in status["trials"]} == states and status["interrupted"] is True


def test_a_live_trial_of_a_run_that_was_not_interrupted_is_unfinished_not_pruned(tmp_path):
    # A killed driver: Tune's state still says RUNNING, with the last epoch's result; no summary says interrupted.
    cfg = _cfg(tmp_path)
    sweep = SweepDir.of(cfg)
    _trial(sweep, "running", [0.4])
    _saved_tune_state(sweep, running=("RUNNING", {"folds_done": 1, "time_total_s": 30.0}))
    summary = collect(sweep.uri, cfg=cfg, finished=True)
    [row] = summary["trials"]
    assert row["state"] == "unfinished" and row["duration_s"] == 30.0 and summary["interrupted"] is False


def test_a_failed_trial_that_was_retried_keeps_how_it_ended(tmp_path):
    # `--retry-failed`: Tune restarts a failed trial as a new trial with the same parameters and forgets the old
    # one; the summary written before the retry is what still knows how the old one ended.
    cfg = _cfg(tmp_path)
    sweep = SweepDir.of(cfg)
    _trial(sweep, "crash", [])  # failed in its first fold: no fold on record
    before = collect(sweep.uri, cfg=cfg, grid=[SimpleNamespace(metrics={}, error=ValueError("boom"), path="crash")])
    assert [(t["trial_id"], t["state"]) for t in before["trials"]] == [("crash", "failed")]
    sweep.write(sweep.summary, before)
    _trial(sweep, "retry", [0.5, 0.6, 0.7])
    _saved_tune_state(sweep, retry=("TERMINATED", {"folds_done": 3}))
    after = collect(sweep.uri, cfg=cfg, grid=_results(retry={"folds_done": 3}))
    rows = {t["trial_id"]: t for t in after["trials"]}
    assert rows["crash"]["state"] == "failed" and rows["crash"]["reason"] == "error: boom" and rows["crash"]["retried"]
    assert rows["retry"]["state"] == "completed" and after["best"]["trial_id"] == "retry"


def test_a_trial_the_running_sweep_says_waits_for_resources_is_pending_with_the_reason(tmp_path):
    from sweeps.search.pending import waiting_record

    cfg = _cfg(tmp_path)
    sweep = SweepDir.of(cfg)
    _trial(sweep, "running", [0.4])
    _saved_tune_state(sweep, running=("RUNNING", {"folds_done": 1}), placed=("RUNNING", {}))
    group = {"bundles": {0: {"CPU": 2.0}}, "stats": {"scheduling_state": "INFEASIBLE"}}
    record = waiting_record(
        [("running", "RUNNING"), ("placed", "RUNNING")],
        started=lambda t: t == "running",
        asks=[{"CPU": 2.0}],
        pending_groups=[group],
        free={"CPU": 0.0},
        total={"CPU": 2.0},
        ceiling="cluster ceiling (live): 1 x CPU 2",
        requested=False,
    )
    sweep.write(sweep.pending, record)
    rows = {t["trial_id"]: t for t in collect(sweep.uri, cfg=cfg, finished=False)["trials"]}
    assert rows["running"]["state"] == "unfinished"
    assert rows["placed"]["state"] == "pending" and "INFEASIBLE" in rows["placed"]["reason"]

    from sweeps.cli.tables import sweep_table

    summary = collect(sweep.uri, cfg=cfg, finished=False)
    assert summary["states"]["pending"] == 1
    text = sweep_table(summary)
    assert "1 waiting for resources" in text and "placed waiting for resources: its worker group" in text
