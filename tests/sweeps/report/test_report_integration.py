"""The shared tiny sweep (completed, pruned and failed trials, then a refit), reported after Ray has stopped."""

import base64
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import VADER
from sweeps.layout import SweepDir

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    return tiny_sweep


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    import ray

    from sweeps.report.facts import build_report

    assert not ray.is_initialized()
    _, _, root, _ = sweep
    out = tmp_path_factory.mktemp("report")
    built = build_report(str(root), formats=("html", "md", "json"), out_dir=str(out))
    assert not ray.is_initialized()  # storage only: no cluster was needed
    return built


def _zerotune(*args, env):
    """The console path end to end (`python -m sweeps` is `zerotune`)."""
    command = [sys.executable, "-m", "sweeps", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def _schema():
    from importlib.resources import files

    return json.loads(files("sweeps.report").joinpath("report.schema.json").read_text())


def test_report_from_storage_has_every_section(report):
    facts, files = report["facts"], report["files"]
    assert set(files) == {"html", "md", "json"} and all(Path(p).is_file() for p in files.values())
    best = facts["best"]
    assert best is not None and len(best["folds"]) == 3
    assert set(best["metrics"]["f1_macro"]) == {"mean", "std"}
    assert best["metrics"]["f1_macro"]["mean"] == pytest.approx(best["mean"])
    assert best["deepspeed"]["zero_optimization"]["stage"] == 1
    assert best["config"]["train"]["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    for t in facts["trials"]:
        assert (
            t["state"] in {"completed", "pruned", "failed"}
            and t["duration_s"] is not None
            and t["worker_seconds"] is not None
        )
        assert t["gpu_hours"] == 0.0
    expected = {
        "optimisation_history",
        "importances",
        "fold_spread",
        "confusion_matrix",
        "roc_curves",
        "loss_curve",
        "refit_confusion_matrix",
    }
    assert expected <= set(report["plots"]), facts["notes"]
    for path in report["plots"].values():
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(files["md"]).read_text()
    for heading in (
        "## Summary",
        "## Best trial",
        "## Best trial: effective config",
        "## All trials",
        "## Parameter importances",
        "## Plots",
        "## Best trial: effective DeepSpeed config",
        "## Refit: test split beside the cross-validation estimate",
    ):
        assert heading in md
    for plot in facts["plots"].values():
        assert f"]({plot['file']})" in md and (Path(files["md"]).parent / plot["file"]).is_file()


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src"))


def test_html_opens_in_headless_chromium_without_missing_images(report, tmp_path):
    from PIL import Image, ImageStat

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)")
    html_path = Path(report["files"]["html"])
    parser = _Images()
    parser.feed(html_path.read_text())
    assert len(parser.srcs) == len(report["plots"]) >= 9
    for src in parser.srcs:
        assert src and src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))).verify()
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        html_path.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("L")
    stat = ImageStat.Stat(image)
    assert stat.var[0] > 100, "the screenshot is blank"
    # Plots fill much of the page: a page of text only (images missing) would be nearly all white.
    dark = sum(image.histogram()[:200]) / (image.width * image.height)
    assert dark > 0.02, dark


def test_pruned_and_failed_trials_are_shown_and_json_validates(report):
    import jsonschema

    facts = report["facts"]
    by_state = {t["state"]: t for t in facts["trials"]}
    assert {"completed", "pruned", "failed"} <= set(by_state), [(t["state"], t["params"]) for t in facts["trials"]]
    failed = sorted(t["reason"] for t in facts["trials"] if t["state"] == "failed")
    assert (
        len(failed) == 2
        and failed[0].startswith("diverged at fold 0 epoch 0 step ")
        and failed[1] == "out-of-memory at fold 0 epoch 0 step 0"
    ), failed
    assert by_state["pruned"]["folds_done"] < 3
    md = Path(report["files"]["md"]).read_text()
    assert (
        "| pruned (stopped after" in md
        and "| failed (diverged at fold 0" in md
        and "| failed (out-of-memory at fold 0" in md
    )
    html = Path(report["files"]["html"]).read_text()
    assert "state-failed" in html and "state-pruned" in html
    document = json.loads(Path(report["files"]["json"]).read_text())
    jsonschema.validate(document, _schema())
    assert document["states"] == facts["states"]


def test_refit_test_metrics_in_report_and_export_reloads(sweep, report):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sweeps.preflight.data import load_examples

    cfg, summary, root, _ = sweep
    refit = report["facts"]["refit"]
    assert refit and refit["n_test"] == 48 and refit["n_train"] == 192
    row = next(r for r in refit["compare"] if r["metric"] == "f1_macro")
    assert row["test"] is not None and row["cv_mean"] == pytest.approx(summary["best"]["mean"])
    assert summary["refit"]["metrics"]["f1_macro"] == pytest.approx(row["test"])
    model_dir = Path(SweepDir(str(root)).latest_refit().model)  # refit/latest.json: the refit that the report shows
    assert refit["model_dir"] == str(model_dir)
    for name in ("model.safetensors", "tokenizer.json", "labels.json", "config.json", "README.md"):
        assert (model_dir / name).is_file(), name
    card = (model_dir / "README.md").read_text()
    assert "- data:" in card and "- config:" in card and "- test metrics:" in card and "- cross-validation:" in card

    folds = json.loads((root / "folds.json").read_text())
    examples = load_examples(cfg, min_per_class=2)
    texts = [examples.texts[i] for i in folds["test"]]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    probe = json.loads((model_dir / "engine_predictions.json").read_text())
    assert probe["row_ids"] == folds["test"]
    enc = tok(texts, truncation=True, max_length=cfg.model.max_length, padding=True, return_tensors="pt")
    assert [
        ids[: int(m.sum())].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)
    ] == probe["rows"]
    with torch.no_grad():
        logits = model(**enc).logits.numpy()
    np.testing.assert_allclose(logits, np.asarray(probe["values"]), atol=1e-4)
    labels = np.asarray(examples.labels)[folds["test"]]
    assert float((logits.argmax(1) == labels).mean()) == pytest.approx(refit["metrics"]["accuracy"])


def test_cli_report_json_and_predict_with_the_refit_model(sweep, tmp_path):
    import jsonschema
    import pandas as pd

    _, _, root, _ = sweep
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out_dir = tmp_path / "r"
    proc = _zerotune("report", root.name, "--storage", root.parent, "--format", "json", "--out", out_dir, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jsonschema.validate(json.loads(proc.stdout), _schema())
    rows = pd.read_csv(VADER / "amazon_reviews.csv").head(200)
    rows.to_csv(tmp_path / "amazon.csv", index=False)
    src, dst = tmp_path / "amazon.csv", tmp_path / "pred.csv"
    proc = _zerotune("predict", root, "--input", src, "--output", dst, env=env)  # the sweep: its latest refit's model
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = pd.read_csv(tmp_path / "pred.csv")
    assert len(out) == 200 and out["label"].isin(["negative", "neutral", "positive"]).all()
    assert "rows/s" in proc.stdout


def test_per_class_scores_worst_out_of_fold_rows_baselines_and_parameter_plots(sweep, report):
    """Issue 19's report sections, from the real sweep: what the workers recorded per fold (per-class scores, each
    fold's worst out-of-fold rows with their texts), the driver's TF-IDF baseline, and the stored study's plots."""
    from sweeps.preflight.data import load_examples

    cfg, summary, root, job = sweep
    facts = report["facts"]
    tfidf, majority = facts["tfidf_baseline"], facts["baseline"]
    assert tfidf["name"] == "TF-IDF + logistic regression" and len(tfidf["per_fold"]) == 3
    assert tfidf["f1_macro"] > majority["f1_macro"] + 0.2  # the keyword task is a bag-of-words task
    assert f"baseline (TF-IDF + logistic regression, same folds): f1_macro {tfidf['f1_macro']:.4f}" in job["logs"]

    best, folds = facts["best"], json.loads((root / "folds.json").read_text())
    labels = facts["data"]["label_names"]
    assert [r["label"] for r in best["per_class"]] == labels
    assert sum(r["support"] for r in best["per_class"]) == sum(len(f["val"]) for f in folds["folds"])
    assert all(0 <= r["f1"] <= 1 for r in best["per_class"])

    worst = best["worst_rows"]
    texts = load_examples(cfg, min_per_class=2).texts
    assert 0 < len(worst) <= 10
    for row in worst:  # out of fold: the fold that scored the row held it out, and its text is the data's
        assert row["row"] in folds["folds"][row["fold"]]["val"]
        assert row["text"] == texts[row["row"]] and row["label"] in labels and row["predicted"] in labels
    order = [(r["predicted"] == r["label"], r["true_prob"]) for r in worst]
    assert order == sorted(order)  # misclassified rows first, then the least probable true class

    assert {"param_slice", "param_parallel"} <= set(report["plots"]), facts["notes"]
    md, html = Path(report["files"]["md"]).read_text(), Path(report["files"]["html"]).read_text()
    for heading in ("Best trial: per class", "Best trial: worst-predicted validation rows"):
        assert f"## {heading}" in md and f"<h2>{heading}</h2>" in html
    assert "TF-IDF + logistic regression on the same folds" in md
    document = json.loads(Path(report["files"]["json"]).read_text())
    assert document["best"]["worst_rows"] == worst and document["tfidf_baseline"] == tfidf
