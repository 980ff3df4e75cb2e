"""The shared tiny sweep, tracked: read back from the real MLflow server it logged to, with TensorBoard's own reader,
and its Optuna study opened in the real optuna-dashboard in headless Chromium."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def tracked(tiny_sweep, mlflow_server):
    if mlflow_server is None:
        pytest.skip("mlflow is not installed (pip install -e '.[tracking]'): the shared sweep ran untracked")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("it-sweep")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return tiny_sweep, client, runs


def _kind(runs, kind: str) -> list:
    return [r for r in runs if r.data.tags.get("zerotune.kind") == kind]


def test_each_trial_is_one_run_nested_under_the_sweep_with_its_state_and_params(tracked):
    (cfg, summary, root, _), client, runs = tracked
    (sweep,) = _kind(runs, "sweep")
    trials = {r.data.tags["zerotune.trial_id"]: r for r in _kind(runs, "trial")}
    assert set(trials) == {t["trial_id"] for t in summary["trials"]}
    for row in summary["trials"]:
        run = trials[row["trial_id"]]
        assert run.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        assert run.data.tags["zerotune.state"] == row["state"]
        assert run.data.params == {k: str(v) for k, v in row["params"].items()}
        want = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}[row["state"]]
        assert run.info.status == want, (row, run.info)
        if row["state"] == "failed":
            assert run.data.tags["zerotune.reason"] == row["reason"]
        if math.isfinite(row["mean"]):
            assert run.data.metrics["f1_macro_mean"] == pytest.approx(row["mean"])
        history = client.get_metric_history(run.info.run_id, "f1_macro")
        _same([(m.step, m.value) for m in history], _finite(enumerate(row["fold_scores"])))
    states = {r.data.tags["zerotune.state"] for r in trials.values()}
    assert {"completed", "pruned", "failed"} <= states


def test_folds_are_nested_runs_with_per_epoch_metrics_and_the_trial_keeps_its_deepspeed_config(tracked):
    (cfg, summary, root, _), client, runs = tracked
    from sweeps.layout import SweepDir

    trials = {r.data.tags["zerotune.trial_id"]: r for r in _kind(runs, "trial")}
    folds = _kind(runs, "fold")
    assert len(folds) == summary["fold_fits"] > 0
    for fold in folds:
        trial_id = fold.data.tags["zerotune.trial_id"]
        assert fold.data.tags["mlflow.parentRunId"] == trials[trial_id].info.run_id
        record = SweepDir(str(root)).trial(trial_id).records.folds()[int(fold.data.tags["zerotune.fold"])]
        history = client.get_metric_history(fold.info.run_id, "eval_loss")
        want = _finite((h["epoch"], h.get("eval_loss")) for h in record.history)  # step = epoch
        _same([(m.step, m.value) for m in history], want)
        if record.diverged is None:
            assert [m.step for m in history] == list(range(record.epochs_run))
            assert fold.data.metrics["scored_f1_macro"] == pytest.approx(record.metrics["f1_macro"])
        else:
            assert fold.info.status == "FAILED" and fold.data.tags["zerotune.reason"].startswith("diverged at epoch")
        assert fold.data.params["n_val"] == str(record.n_val)
    completed = next(t for t in summary["trials"] if t["state"] == "completed")
    artifacts = [a.path for a in client.list_artifacts(trials[completed["trial_id"]].info.run_id)]
    assert "deepspeed.json" in artifacts
    saved = client.download_artifacts(trials[completed["trial_id"]].info.run_id, "deepspeed.json")
    assert '"stage": 1' in Path(saved).read_text()  # the sweep's ZeRO stage, as the trial ran it


def test_the_sweep_run_holds_the_best_scores_and_the_report(tracked):
    (cfg, summary, root, _), client, runs = tracked
    (sweep,) = _kind(runs, "sweep")
    assert sweep.info.status == "FINISHED"
    assert sweep.data.tags["best_trial"] == summary["best"]["trial_id"]
    assert sweep.data.metrics["best_f1_macro_mean"] == pytest.approx(summary["best"]["mean"])
    assert sweep.data.metrics["test_f1_macro"] == pytest.approx(summary["refit"]["metrics"]["f1_macro"])
    report = {a.path for a in client.list_artifacts(sweep.info.run_id, "report")}
    assert {"report/report.html", "report/report.json"} <= report
    html = Path(client.download_artifacts(sweep.info.run_id, "report/report.html")).read_text()
    assert summary["best"]["trial_id"] in html


def test_tensorboard_event_files_read_back_with_tensorboards_reader(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sweeps.layout import SweepDir

    (cfg, summary, root, _), _, _ = tracked
    sweep = SweepDir(str(root))
    for row in summary["trials"]:
        trial = EventAccumulator(sweep.tensorboard_run(row["trial_id"]))
        trial.Reload()
        _same(_scalars(trial, "f1_macro"), _finite(enumerate(row["fold_scores"])), abs=1e-6)  # float32 events
        _same(_scalars(trial, "f1_macro_mean"), _finite([(0, row["mean"])]), abs=1e-6)
        for record in sweep.trial(row["trial_id"]).records.folds():
            fold = EventAccumulator(sweep.tensorboard_run(row["trial_id"], record.fold))
            fold.Reload()
            want = _finite((h["epoch"], h.get("eval_loss")) for h in record.history)
            _same(_scalars(fold, "eval_loss"), want, rel=1e-6)


def _scalars(events, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]], **tolerance) -> None:
    """The same steps, with values equal within `tolerance` (pytest.approx's)."""
    assert [step for step, _ in got] == [step for step, _ in want], (got, want)
    assert [value for _, value in got] == pytest.approx([value for _, value in want], **tolerance), (got, want)


def _finite(pairs) -> list[tuple[int, float]]:
    return [(step, value) for step, value in pairs if isinstance(value, int | float) and math.isfinite(value)]


def test_optuna_dashboard_shows_the_sweeps_study_in_headless_chromium(tiny_sweep, tmp_path):
    from PIL import Image, ImageStat

    from mlflow_server import start_optuna_dashboard
    from sweeps.search.study import study_store

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
    cfg, summary, _, _ = tiny_sweep
    server = start_optuna_dashboard(study_store(cfg).url, tmp_path / "dashboard.log")
    try:
        server.ready()
        shot = tmp_path / "dashboard.png"
        page = f"{server.uri}/dashboard/studies/1/trials"
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        cmd += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        cmd += [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"]
        # the page is drawn by its script from the dashboard's API: let it run before the DOM and the shot are taken
        cmd += ["--virtual-time-budget=10000", f"--screenshot={shot}", "--dump-dom", page]
        shown = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert shot.is_file(), shown.stderr[-2000:]
    assert ImageStat.Stat(Image.open(shot).convert("L")).var[0] > 100, "the screenshot is blank"
    assert f">{len(summary['trials'])} Trials<" in shown.stdout, shown.stdout[-3000:]  # the count the list heads
    numbers = {int(n) for n in re.findall(r">Trial (\d+)<", shown.stdout)}
    assert numbers == set(range(len(summary["trials"]))), shown.stdout[-3000:]
