"""Reports built from synthetic sweep storage (no Ray): every task's plots, importances, states, schema, job lookup."""

import json
from pathlib import Path

import numpy as np
import pytest

from sweeps.config import load_config


def _schema():
    from importlib.resources import files

    return json.loads(files("sweeps.report").joinpath("report.schema.json").read_text())


def _fold(task, fold, rng, *, diverged=None):
    if task == "regression":
        target = rng.normal(size=40)
        metrics = {
            "eval_loss": 0.5,
            "mse": float(rng.uniform(0.3, 0.6)),
            "mae": 0.5,
            "r2": 0.4,
            "residuals": {
                "target": target.round(3).tolist(),
                "prediction": (target + rng.normal(scale=0.5, size=40)).round(3).tolist(),
            },
        }
    elif task == "classification":
        metrics = {"eval_loss": 0.6, "f1_macro": float(rng.uniform(0.5, 0.9)), "accuracy": 0.8, **_per_class(fold)}
    else:
        loss = float(rng.uniform(2, 3))
        metrics = {"eval_loss": loss, "perplexity": float(np.exp(loss)), "eval_tokens": 900}
    history = [
        {
            "epoch": e,
            "train_loss": 3.0 - e * 0.3,
            "eval_loss": metrics["eval_loss"] + 0.1 * (2 - e),
            "steps": 5,
            "time": 1.5,
        }
        for e in range(3)
    ]
    from trainer.records import FoldRecord

    return FoldRecord(
        fold=fold,
        epochs_run=3,
        best_epoch=2,
        metrics=metrics,
        history=history,
        val_sha="x",
        trainable_params=1000,
        total_params=1000,
        n_train=80,
        n_val=40,
        diverged=diverged,
    )


def _per_class(fold: int) -> dict:
    """What a classification fold records (trainer.metrics, trainer.evaluate): per-class scores and the fold's worst
    out-of-fold rows, 12 of them (more than the report shows), the worst with P(true) 0.01 * fold."""
    worst = [
        {
            "row": 100 * fold + i,
            "text": f"row {100 * fold + i} <i>",
            "label": "pos",
            "predicted": "neg",
            "confidence": 0.9,
            "true_prob": round(0.01 * fold + 0.05 * i, 4),
        }
        for i in range(12)
    ]
    return {
        "per_class": {
            "neg": {"precision": 0.5 + 0.1 * fold, "recall": 0.6, "f1": 0.4 + 0.1 * fold, "support": 10},
            "pos": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 30},
        },
        "worst_rows": worst,
    }


def make_storage(root: Path, *, task: str, trials: list[dict], test: list[int] = (), **over) -> Path:
    """trials: [{"params": {...}, "folds": n, "diverged": bool}]; `over`: config groups to replace
    -> a sweep directory as `zerotune sweep run` leaves it."""
    raw = {
        "name": f"syn-{task}",
        "task": task,
        "model": {"path": "/models/x"},
        "data": {"path": "/data/x.csv"},
        "folds": {"k": 3, "test_fraction": 0.2 if test else 0.0},
        "search": {
            "num_trials": len(trials),
            "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "batch_size": [8, 16]},
        },
        "storage": {"path": str(root)},
        **over,
    }
    from sweeps.layout import Params, SweepDir

    cfg = load_config(raw=raw)
    sweep = SweepDir.of(cfg)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    sweep.write(sweep.data, {"n_rows": 150, "dropped": {}, "label_names": None, "n_test": len(test), "baseline": None})
    sweep.write(
        sweep.folds,
        {
            "strategy": "kfold",
            "test": list(test),
            "fingerprint": "x",
            "n_rows": 150,
            "label_names": None,
            "folds": [{"train": list(range(0, 80)), "val": list(range(80, 120))}] * 3,
        },
    )
    rng = np.random.default_rng(0)
    for i, t in enumerate(trials):
        trial = sweep.trial(f"t{i:04d}")
        trial.write_params(Params(params=t["params"], started=1000.0 + i))
        trial.records.write_deepspeed({"zero_optimization": {"stage": 2}})
        for f in range(t["folds"]):
            trial.records.write_fold(
                _fold(
                    task,
                    f,
                    rng,
                    diverged={"fold": 0, "epoch": 0, "step": 2, "loss": "nan"} if t.get("diverged") else None,
                )
            )
    return Path(sweep.uri)


REG_TRIALS = [
    {"params": {"learning_rate": 1e-4, "batch_size": 8}, "folds": 3},
    {"params": {"learning_rate": 3e-3, "batch_size": 16}, "folds": 3},
    {"params": {"learning_rate": 5e-5, "batch_size": 8}, "folds": 3},
    {"params": {"learning_rate": 9e-3, "batch_size": 16}, "folds": 1, "diverged": True},
]


def test_regression_report_has_residuals_importances_and_validates(tmp_path):
    import jsonschema

    from sweeps.report.facts import build_report

    uri = make_storage(tmp_path / "store", task="regression", trials=REG_TRIALS)
    out = build_report(str(uri), formats=("html", "md", "json"), out_dir=str(tmp_path / "out"))
    facts = out["facts"]
    assert {"optimisation_history", "importances", "fold_spread", "residuals", "loss_curve"} <= set(out["plots"])
    assert "confusion_matrix" not in out["plots"]
    assert set(facts["importances"]["values"]) == {"learning_rate", "batch_size"}
    assert {k: v for k, v in facts["states"].items() if v} == {"completed": 3, "failed": 1}
    assert facts["best"]["mean"] == min(
        t["mean"] for t in facts["trials"] if t["state"] == "completed"
    )  # mse: lower is better
    jsonschema.validate(json.loads(Path(out["files"]["json"]).read_text()), _schema())
    assert "| failed (diverged at fold 0 epoch 0 step 2 (loss nan))" in Path(out["files"]["md"]).read_text()


def test_the_report_shows_a_dimension_only_where_it_applied_and_flags_epochs_picked_on_the_scored_rows(tmp_path):
    from sweeps.report.facts import build_report

    space = {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "method": ["full", "lora"], "lora_rank": [4, 8]}
    # trials recorded when every dimension was drawn in every trial: the full one carries an unused lora_rank
    trials = [
        {"params": {"learning_rate": 1e-4, "method": "full", "lora_rank": 8}, "folds": 3},
        {"params": {"learning_rate": 3e-3, "method": "lora", "lora_rank": 4}, "folds": 3},
    ]
    search = {"num_trials": 2, "space": space}
    train = {"epochs": 3, "early_stopping_patience": 1}
    uri = make_storage(tmp_path / "store", task="regression", trials=trials, search=search, train=train)
    out = build_report(str(uri), formats=("md",), out_dir=str(tmp_path / "out"))
    params = {t["trial_id"]: t["params"] for t in out["facts"]["trials"]}
    assert params == {"t0000": {"learning_rate": 1e-4, "method": "full"}, "t0001": trials[1]["params"]}
    assert out["facts"]["best"]["params"] == params[out["facts"]["best"]["trial_id"]]
    assert "optimistic" in out["facts"]["best"]["selection_note"]
    assert "so this score is optimistic" in Path(out["files"]["md"]).read_text()
    held = make_storage(tmp_path / "held", task="regression", trials=trials, search=search,
                        train={**train, "early_stopping_holdout": 0.2})  # fmt: skip
    note = build_report(str(held), formats=("md",), out_dir=str(tmp_path / "out2"))["facts"]["best"]["selection_note"]
    assert "held out from training" in note and "optimistic" not in note
    plain = make_storage(tmp_path / "plain", task="regression", trials=trials, search=search)
    assert (
        build_report(str(plain), formats=("md",), out_dir=str(tmp_path / "o3"))["facts"]["best"]["selection_note"]
        is None
    )


def test_causal_lm_report_has_eval_loss_curve_over_a_uri(tmp_path):
    from sweeps.report.facts import build_report

    uri = make_storage(tmp_path / "store", task="causal-lm", trials=REG_TRIALS[:2])
    out = build_report(uri.as_uri(), formats=("md",), out_dir=str(tmp_path / "out"))  # file:// goes through pyarrow
    assert "loss_curve" in out["plots"] and "residuals" not in out["plots"]
    assert out["facts"]["best"]["metrics"]["perplexity"]["std"] >= 0


def test_one_completed_trial_gives_a_note_not_an_importance_plot(tmp_path):
    import jsonschema

    from sweeps.report.facts import build_report

    uri = make_storage(tmp_path / "store", task="regression", trials=REG_TRIALS[:1])
    out = build_report(str(uri), formats=("json",), out_dir=str(tmp_path / "out"))
    assert "importances" not in out["plots"] and out["facts"]["importances"]["values"] == {}
    assert any("at least 2" in n for n in out["facts"]["notes"])
    jsonschema.validate(out["facts"], _schema())


def test_refit_without_a_test_split_names_test_fraction(tmp_path):
    from sweeps.final.refit import refit
    from zerotune.errors import ConfigError

    uri = make_storage(tmp_path / "store", task="regression", trials=REG_TRIALS[:1])
    with pytest.raises(ConfigError) as info:
        refit(str(uri))
    assert info.value.field == "folds.test_fraction"


def test_cli_report_of_a_missing_sweep_is_one_error_line(tmp_path, capsys):
    from sweeps.cli import main

    assert main(["report", "nope", "--storage", str(tmp_path)]) == 3
    assert capsys.readouterr().err.startswith("error: sweep: no sweep")


def test_report_of_a_job_finds_its_sweep_from_the_entrypoint(tmp_path, monkeypatch):
    from cluster import jobs
    from sweeps.results.job import job_sweep_uri, parse_entrypoint

    uri = make_storage(tmp_path / "store", task="regression", trials=REG_TRIALS[:1])
    entry = jobs.sweep_entrypoint(
        config="missing.yaml", overrides=["name=syn-regression", "search.num_trials=2"], storage="s3://bucket/runs"
    )
    assert parse_entrypoint(entry) == (
        "missing.yaml",
        ["name=syn-regression", "search.num_trials=2", "storage.path=s3://bucket/runs"],
    )
    seen = {}

    def fake_status(*, address, job_id, token):
        seen.update(address=address, job_id=job_id, token=token)
        return {"job_id": job_id, "status": "SUCCEEDED", "entrypoint": entry}

    monkeypatch.setattr(jobs, "job_status", fake_status)
    # The job wrote to s3://bucket/runs; this machine reads the same storage at a local mount.
    found = job_sweep_uri(
        address="http://head:8265", job_id="raysubmit_1", token="t0k", storage=str(tmp_path / "store")
    )
    assert Path(found) == uri and seen == {"address": "http://head:8265", "job_id": "raysubmit_1", "token": "t0k"}


def test_a_finished_sweep_leaves_out_a_trial_directory_an_interrupted_run_started_and_nothing_finished(tmp_path):
    from sweeps.results.collect import collect

    uri = make_storage(
        tmp_path,
        task="regression",
        trials=REG_TRIALS[:2] + [{"params": {"learning_rate": 1e-3, "batch_size": 8}, "folds": 0}],
    )
    cfg = load_config(raw=json.loads((uri / "config.json").read_text()))
    live = collect(str(uri), cfg=cfg)  # while a sweep may still run, a directory without folds is a trial in progress
    assert live["states"]["unfinished"] == 1 and len(live["trials"]) == 3
    done = collect(str(uri), cfg=cfg, finished=True)  # Tune knows none of these three, but two have folds on record
    assert {k: v for k, v in done["states"].items() if v} == {"completed": 2}
    assert done["best"]["trial_id"] == live["best"]["trial_id"]


def test_a_damaged_record_shows_its_trial_as_unreadable_in_every_format(tmp_path):
    import jsonschema

    from sweeps.cli import tables
    from sweeps.report.facts import build_report
    from sweeps.results.status import sweep_status

    uri = make_storage(tmp_path / "store", task="regression", trials=REG_TRIALS)
    (uri / "trials" / "t0001" / "records" / "fold-2.json").write_text('{"fold": 2, "epochs_run": 3, "metri')
    (uri / "trials" / "t0002" / "params.json").write_text("")
    out = build_report(str(uri), formats=("html", "md", "json"), out_dir=str(tmp_path / "out"))
    rows = {t["trial_id"]: t for t in out["facts"]["trials"]}
    assert [rows[t]["state"] for t in sorted(rows)] == ["completed", "unreadable", "unreadable", "failed"]
    assert "fold-2.json" in rows["t0001"]["reason"] and "params.json" in rows["t0002"]["reason"]
    assert out["facts"]["best"]["trial_id"] == "t0000"
    jsonschema.validate(json.loads(Path(out["files"]["json"]).read_text()), _schema())
    assert Path(out["files"]["md"]).read_text().count("| unreadable") == 2
    printed = tables.sweep_table(sweep_status(str(uri), storage=str(tmp_path)))
    assert "t0001 unreadable: cannot parse" in printed and "t0002 unreadable: cannot parse" in printed


def test_the_report_shows_the_latest_completed_refit(tmp_path):
    from sweeps.layout import SweepDir
    from sweeps.report.facts import report_facts

    uri = make_storage(tmp_path / "store", task="regression", trials=REG_TRIALS[:2], test=list(range(120, 150)))
    sweep = SweepDir(str(uri))
    assert report_facts(str(uri))["refit"] is None
    runs = [sweep.new_refit() for _ in range(3)]
    for i, run in enumerate(runs):
        record = {"trial_id": f"t000{i}", "n_train": 120, "n_test": 30, "metrics": {"mse": 0.1 * (i + 1)}}
        sweep.write(run.metrics, {**record, "model_dir": run.model})
    sweep.mark_refit_complete(runs[0])
    sweep.mark_refit_complete(runs[1])  # the third is still running (or failed): not marked
    refit = report_facts(str(uri))["refit"]
    assert (refit["trial_id"], refit["metrics"]["mse"], refit["model_dir"]) == ("t0001", 0.2, runs[1].model)


SYSTEM = "You are a helpful assistant who answers briefly. " * 4


def test_sample_generations_of_the_best_trial_are_shown_and_validate(tmp_path):
    """train.generate_eval keeps sample generations in each fold record: the report shows a few per fold."""
    import dataclasses

    import jsonschema

    from sweeps.layout import SweepDir
    from sweeps.report.facts import SAMPLES, build_report

    root = make_storage(tmp_path / "store", task="causal-lm", trials=REG_TRIALS[:2])
    for trial_id in ("t0000", "t0001"):
        records = SweepDir(str(root)).trial(trial_id).records
        for record in records.folds():
            samples = [  # a long system prompt opens each prompt: its question, at the end, must still show
                {"row": r, "prompt": SYSTEM + f"q{r} <b>", "reference": "a | b", "generated": "x" * 300}
                for r in range(5)
            ]
            metrics = {**record.metrics, "rouge_l": 0.25, "exact_match": 0.0, "generations": samples}
            records.write_fold(dataclasses.replace(record, metrics=metrics))
    out = build_report(str(root), formats=("md", "html", "json"), out_dir=str(tmp_path / "out"))
    shown = out["facts"]["best"]["generations"]
    assert [(g["fold"], g["row"]) for g in shown] == [(f, r) for f in range(3) for r in range(SAMPLES)]
    jsonschema.validate(out["facts"], _schema())
    md = Path(out["files"]["md"]).read_text()
    prompt = "…" + (SYSTEM + "q1 <b>")[-159:]
    assert "## Best trial: sample generations" in md and f"| 0 | 1 | {prompt} | a \\| b | " + "x" * 159 + "… |" in md
    assert "q0 &lt;b&gt;</td>" in Path(out["files"]["html"]).read_text()
    assert "rouge_l" in out["facts"]["best"]["metrics"]  # and the scores sit with the other metrics


CLS_TRIALS = [
    {"params": {"learning_rate": 1e-4, "batch_size": 8}, "folds": 3},
    {"params": {"learning_rate": 3e-3, "batch_size": 16}, "folds": 3},
    {"params": {"learning_rate": 5e-5, "batch_size": 16}, "folds": 3},
]


def _store_study(uri: Path, trials: list[dict], scores: list[float]) -> None:
    """The Optuna study a sweep's searcher leaves (sweeps.search.study): a SQLite file named by sweeps.layout."""
    import optuna

    from sweeps.layout import SweepDir

    cfg = load_config(raw=json.loads((uri / "config.json").read_text()))
    study = optuna.create_study(
        storage=f"sqlite:///{SweepDir(str(uri)).study}", study_name=cfg.name, direction="maximize"
    )
    dists = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "batch_size": optuna.distributions.CategoricalDistribution([8, 16]),
    }
    for t, score in zip(trials, scores, strict=True):
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=dists, value=score))


def test_classification_report_shows_per_class_scores_worst_rows_and_parameter_plots(tmp_path):
    import jsonschema

    from sweeps.report.facts import WORST_SHOWN, build_report

    uri = make_storage(tmp_path / "store", task="classification", trials=CLS_TRIALS)
    _store_study(uri, CLS_TRIALS, [0.7, 0.6, 0.8])
    out = build_report(str(uri), formats=("html", "md", "json"), out_dir=str(tmp_path / "out"))
    best = out["facts"]["best"]
    neg = next(r for r in best["per_class"] if r["label"] == "neg")
    assert neg["f1"] == pytest.approx(0.5) and neg["precision"] == pytest.approx(0.6) and neg["support"] == 30
    assert neg["f1_std"] == pytest.approx(np.std([0.4, 0.5, 0.6]))
    worst = best["worst_rows"]
    assert len(worst) == WORST_SHOWN  # bounded, over all folds
    assert [(w["fold"], w["row"]) for w in worst[:3]] == [(0, 0), (1, 100), (2, 200)]  # lowest P(true) first
    assert [w["true_prob"] for w in worst] == sorted(w["true_prob"] for w in worst)
    assert {"param_slice", "param_parallel"} <= set(out["plots"]), out["facts"]["notes"]
    for name in ("param_slice", "param_parallel"):
        assert Path(out["plots"][name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    jsonschema.validate(json.loads(Path(out["files"]["json"]).read_text()), _schema())
    md = Path(out["files"]["md"]).read_text()
    assert "## Best trial: per class" in md and "| neg | 0.6 | 0.6 | 0.5 | 0.08165 | 30 |" in md
    assert (
        "## Best trial: worst-predicted validation rows" in md and "| 0 | 0 | row 0 <i> | pos | neg | 0.9 | 0 |" in md
    )
    html = Path(out["files"]["html"]).read_text()
    assert "row 0 &lt;i&gt;</td>" in html and html.count("data:image/png;base64,") == len(out["plots"])


def test_without_a_stored_study_the_report_says_so_instead_of_parameter_plots(tmp_path):
    from sweeps.report.facts import build_report

    uri = make_storage(tmp_path / "store", task="classification", trials=CLS_TRIALS[:2])
    out = build_report(str(uri), formats=("json",), out_dir=str(tmp_path / "out"))
    assert not {"param_slice", "param_parallel"} & set(out["plots"])
    assert any("no Optuna study stored" in n for n in out["facts"]["notes"])
    assert not (uri / "study.db").exists()  # reading did not create one


def test_both_baselines_show_in_the_report_and_validate(tmp_path):
    import jsonschema

    from sweeps.layout import SweepDir
    from sweeps.report.facts import build_report

    uri = make_storage(tmp_path / "store", task="classification", trials=CLS_TRIALS[:2])
    sweep = SweepDir(str(uri))
    fold = {"f1_macro": 0.2, "accuracy": 0.6}
    data = {
        **sweep.read(sweep.data),
        "baseline": {"name": "majority class", **fold, "per_fold": [fold] * 3},
        "tfidf_baseline": {"name": "TF-IDF + logistic regression", "f1_macro": 0.55, "accuracy": 0.7, "per_fold": []},
    }
    sweep.write(sweep.data, data)
    out = build_report(str(uri), formats=("md", "json"), out_dir=str(tmp_path / "out"))
    assert out["facts"]["tfidf_baseline"]["f1_macro"] == 0.55
    jsonschema.validate(out["facts"], _schema())
    md = Path(out["files"]["md"]).read_text()
    assert "| baseline | majority class on the same folds: f1_macro 0.2 |" in md
    assert "| baseline | TF-IDF + logistic regression on the same folds: f1_macro 0.55 |" in md
