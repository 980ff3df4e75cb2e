"""`zerotune predict` on exported model directories (tiny random models: fast, no Ray)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import VADER
from sweeps.cli import main

LABELS = ["negative", "neutral", "positive"]


def _export(tiny_bert_dir: Path, out: Path, *, task: str) -> Path:
    """What a refit exports: weights, tokenizer, labels and zerotune.json."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs = (
        {"num_labels": 1, "problem_type": "regression"}
        if task == "regression"
        else {"num_labels": 3, "id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
    )
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, ignore_mismatched_sizes=True, **kwargs)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    (out / "zerotune.json").write_text(
        json.dumps({"task": task, "max_length": 64, "labels": LABELS if task != "regression" else None})
    )
    return out


@pytest.fixture(scope="module")
def classifier(tiny_bert_dir, tmp_path_factory):
    return _export(tiny_bert_dir, tmp_path_factory.mktemp("clf"), task="classification")


@pytest.fixture(scope="module")
def amazon_slice(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "amazon.csv"
    pd.read_csv(VADER / "amazon_reviews.csv").head(150).to_csv(path, index=False)
    return path


def test_predict_csv_writes_one_row_per_input_and_prints_throughput(classifier, amazon_slice, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert (
        main(["predict", str(classifier), "--input", str(amazon_slice), "--output", str(out), "--batch-size", "16"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "predicted 150 rows" in printed and "rows/s" in printed
    pred = pd.read_csv(out)
    source = pd.read_csv(amazon_slice)
    assert len(pred) == len(source) and list(pred["id"]) == list(source["id"])  # input order kept
    assert pred["label"].isin(LABELS).all()
    assert (pred[[f"p_{n}" for n in LABELS]].sum(axis=1) - 1).abs().max() < 1e-4


def test_predict_jsonl_with_another_text_column_as_json(classifier, tmp_path, capsys):
    src = tmp_path / "rows.jsonl"
    pd.DataFrame({"review": ["great phone", "awful battery", "", "it is a phone"]}).to_json(
        src, orient="records", lines=True
    )
    assert main(["predict", str(classifier), "--input", str(src), "--text-column", "review", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 4 and len(result["predictions"]) == 4 and result["rows_per_s"] > 0


def test_predict_regression_model_gives_values(tiny_bert_dir, amazon_slice, tmp_path, capsys):
    model = _export(tiny_bert_dir, tmp_path / "reg", task="regression")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", str(model), "--input", str(amazon_slice), "--output", str(out)]) == 0
    pred = pd.read_json(out, lines=True)
    assert len(pred) == 150 and pred["value"].notna().all() and "label" not in pred


def test_predict_names_a_missing_text_column(classifier, amazon_slice, capsys):
    assert main(["predict", str(classifier), "--input", str(amazon_slice), "--text-column", "body"]) == 2
    err = capsys.readouterr().err
    assert "error: --text-column: column 'body' not in" in err and "id, text, score, label" in err


def test_predict_with_a_sweep_directory_runs_its_latest_completed_refit(classifier, amazon_slice, tmp_path, capsys):
    import shutil

    from sweeps.layout import SweepDir

    sweep = SweepDir(str(tmp_path / "sweep"))
    sweep.write(sweep.config, {"name": "sweep"})  # a sweep directory has a config.json too: folds.json tells it apart
    sweep.write(sweep.folds, {"folds": [], "test": [0]})
    assert main(["predict", sweep.uri, "--input", str(amazon_slice)]) == 2
    assert "has no completed refit" in capsys.readouterr().err
    run = sweep.new_refit()
    shutil.copytree(classifier, run.model)
    sweep.mark_refit_complete(run)
    assert main(["predict", sweep.uri, "--input", str(amazon_slice), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == run.model and result["rows"] == 150


def test_a_sentence_pair_model_predicts_from_both_columns_and_refuses_single_texts(classifier, tmp_path, capsys):
    """A model exported from a pairs fit (zerotune.json "paired") scores text + pair, segment ids included, as
    training tokenized them (trainer.data.tokenize); single texts into it, or pairs into a single-text model, are
    refused rather than scored as noise."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    paired = tmp_path / "paired"
    shutil.copytree(classifier, paired)
    meta = json.loads((paired / "zerotune.json").read_text())
    (paired / "zerotune.json").write_text(json.dumps({**meta, "paired": True}))
    src = tmp_path / "pairs.csv"
    rows = pd.DataFrame({"id": [7, 8, 9], "q": ["is it good", "what", "why not"], "a": ["yes very", "no", "because"]})
    rows.to_csv(src, index=False)

    assert main(["predict", str(paired), "--input", str(src), "--text-column", "q"]) == 2
    assert "error: --text-pair-column:" in capsys.readouterr().err
    single = ["predict", str(classifier), "--input", str(src), "--text-column", "q", "--text-pair-column", "a"]
    assert main(single) == 2 and "trained on single texts" in capsys.readouterr().err

    out = tmp_path / "pred.csv"
    assert main(["predict", str(paired), "--input", str(src), "--text-column", "q", "--text-pair-column", "a",
                 "--output", str(out)]) == 0  # fmt: skip
    pred = pd.read_csv(out)
    assert list(pred["id"]) == [7, 8, 9] and list(pred["a"]) == list(rows["a"])
    tok = AutoTokenizer.from_pretrained(paired)
    model = AutoModelForSequenceClassification.from_pretrained(paired).eval()
    with torch.no_grad():
        enc = tok(list(rows["q"]), list(rows["a"]), padding=True, return_tensors="pt")
        probs = model(**enc).logits.softmax(-1).numpy()
    assert abs(pred[[f"p_{n}" for n in LABELS]].to_numpy() - probs).max() < 1e-5
