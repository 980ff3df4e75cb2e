"""`zerotune sweep status NAME --watch`: follows a sweep that a run is writing, from its storage alone."""

import threading
import time

from sweeps import lease
from sweeps.config import load_config
from sweeps.layout import Params, SweepDir
from trainer.records import FoldRecord


def _sweep(tmp_path) -> SweepDir:
    search = {"num_trials": 2, "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}}
    raw = {"name": "s", "data": {"path": "x.csv"}, "folds": {"k": 3}, "search": search}
    cfg = load_config(raw={**raw, "storage": {"path": str(tmp_path)}})
    sweep = SweepDir.of(cfg)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    sweep.trial("t1").write_params(Params(params={"learning_rate": 1e-3}, started=1.0))
    return sweep


def _fold(sweep: SweepDir, fold: int) -> None:
    record = FoldRecord(fold=fold, epochs_run=1, best_epoch=0, metrics={"f1_macro": 0.5}, history=[], val_sha="x")
    sweep.trial("t1").records.write_fold(record)


def test_watch_shows_each_change_until_the_run_that_writes_the_sweep_ends(tmp_path):
    from sweeps.results.status import watch_status

    sweep = _sweep(tmp_path)
    _fold(sweep, 0)
    sweep.write(sweep.summary, {"interrupted": True})  # an earlier run's summary: a resumed sweep is running again
    held = lease.take(sweep.uri, timeout_s=60, heartbeat_s=0.05, settle_s=0)
    ended = []

    def run():  # the sweep's run, writing as it goes
        time.sleep(0.4)
        _fold(sweep, 1)
        time.sleep(0.4)
        ended.append(time.monotonic())
        held.release()

    writer = threading.Thread(target=run)
    shown = []
    writer.start()
    try:
        last = watch_status(
            "s", storage=str(tmp_path), interval_s=0.05, show=lambda s: shown.append(s["trials"][0]["folds_done"])
        )
        returned = time.monotonic()
    finally:
        writer.join()
    assert ended and returned >= ended[0]  # it returned only once the run had released the sweep
    assert shown == [1, 2]  # each change once, not each read
    assert last["trials"][0]["folds_done"] == 2


def test_watch_of_an_ended_sweep_prints_it_once_and_exits_zero(tmp_path, capsys):
    from sweeps.cli import main

    sweep = _sweep(tmp_path)
    _fold(sweep, 0)
    sweep.write(sweep.summary, {"interrupted": False})
    assert main(["sweep", "status", sweep.uri, "--watch", "--interval", "0.05"]) == 0
    out = capsys.readouterr().out
    assert out.count("sweep s:") == 1 and "t1" in out


def test_watch_of_a_sweep_no_run_holds_ends_even_without_a_summary_and_json_is_one_document_per_line(tmp_path, capsys):
    """A run killed before its first summary leaves no live claim: the watch shows what is there and ends."""
    import json

    from sweeps.cli import main

    sweep = _sweep(tmp_path)
    _fold(sweep, 0)
    assert main(["sweep", "status", sweep.uri, "--watch", "--interval", "0.05", "--format", "json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["trials"][0]["folds_done"] == 1
