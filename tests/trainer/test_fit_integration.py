"""Real Ray Train + DeepSpeed fits of tiny random-initialised models on a local Ray cluster (2 CPU workers):
each ZeRO stage, export and reload, early stopping, and a worker fault with a restart from a checkpoint.

No fit here repeats one run elsewhere: ZeRO-1 on two workers is the shared tiny sweep's stage (its best trial
must learn, tests/sweeps/search/test_sweep_integration.py), and the causal LM runs under ZeRO-3 only, the stage
whose behaviour depends on the model (parameters partitioned, gathered for export); ZeRO-0 to 2 keep parameters
whole and the classifier's fits cover them. Only the restart test saves the engine every epoch (a restart
resumes from it); the others save it after their last epoch, as storage.checkpoint_every_epoch: false does."""

import json

import numpy as np
import pytest

from sweeps.config import load_config
from sweeps.final.train import run_fit, run_fits

pytestmark = pytest.mark.integration
STAGES = [0, 2, 3]  # the classifier's; the causal LM runs under ZeRO-3


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(trainer_ray):
    """The Ray instance of tests/trainer's integration modules, with the fault hooks (tests/conftest.py)."""


def _bert_cfg(tmp_path, model_dir, data, stage, *, checkpoints=False, **train):
    """`checkpoints`: save the engine every epoch (what a restart resumes from); otherwise only the last epoch's."""
    return load_config(
        raw={
            "name": f"bert-z{stage}",
            "task": "classification",
            "model": {"path": str(model_dir), "max_length": 32, "dropout": 0.0},
            "data": {"path": str(data)},
            "train": {"learning_rate": 3e-3, "batch_size": 8, "epochs": 3, "warmup_ratio": 0.0, **train},
            "deepspeed": {"zero_stage": stage},
            "scaling": {"num_workers": 2, "max_failures": 2},
            "storage": {"path": str(tmp_path), "checkpoint_every_epoch": checkpoints},
        }
    )


def _gpt2_cfg(tmp_path, model_dir, stage):
    return load_config(
        raw={
            "name": f"gpt2-z{stage}",
            "task": "causal-lm",
            "model": {"path": str(model_dir), "max_length": 48, "dropout": 0.0},
            "data": {
                "path": "pkg:chatterbot_corpus/data/english",
                "format": "chatterbot",
                "prompt_column": "text",
                "response_column": "response",
                "max_rows": 160,
            },
            # Generation (train.generate_eval) under ZeRO-3 on two ranks: 5 rows in batches of 2, so rank 0 runs
            # two batches and rank 1 one and a dummy, while every forward gathers the partitioned parameters.
            "train": {
                "learning_rate": 3e-3,
                "batch_size": 8,
                "epochs": 2,
                "warmup_ratio": 0.0,
                "eval_batch_size": 2,
                "generate_eval": True,
                "generate_max_new_tokens": 4,
                "generate_max_rows": 5,
            },
            "deepspeed": {"zero_stage": stage},
            "scaling": {"num_workers": 2, "max_failures": 2},
            "storage": {"path": str(tmp_path), "checkpoint_every_epoch": False},
        }
    )


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, tiny_bert_dir, tiny_gpt2_dir, keyword_csv):
    """The ZeRO matrix as `zerotune train` runs it, all fits in turn on ONE worker group (`run_fits`: the group's
    start is paid once). Returns (summaries by config name, storage root)."""
    root = tmp_path_factory.mktemp("matrix")
    cfgs = [_bert_cfg(root, tiny_bert_dir, keyword_csv, stage) for stage in STAGES]
    summaries = run_fits([*cfgs, _gpt2_cfg(root, tiny_gpt2_dir, 3)], export=True)
    return {s["name"]: s for s in summaries}, root


def _reload_and_compare(model_dir, task):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    probe = json.loads((model_dir / "engine_predictions.json").read_text())
    cls = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    model = cls.from_pretrained(model_dir).eval()
    for row, expected in zip(probe["rows"], probe["values"], strict=True):
        with torch.no_grad():
            logits = (
                model(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long))
                .logits[0]
                .numpy()
            )
        if task == "causal-lm":
            assert logits.argmax(-1).tolist() == expected[: len(row)]
        else:
            np.testing.assert_allclose(logits, expected, atol=1e-4)


@pytest.mark.parametrize("stage", STAGES)
def test_bert_classifier_trains_under_each_zero_stage(matrix, extensions_dir, stage):
    from pathlib import Path

    summaries, root = matrix
    summary = summaries[f"bert-z{stage}"]
    losses = [h["train_loss"] for h in summary["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.9, losses
    assert summary["metrics"]["accuracy"] > 0.5  # three balanced classes: chance is 1/3
    memory = summary["memory"]  # one entry per rank
    assert len(memory["peak_rss_mb"]) == 2 and all(
        0 < s <= p for s, p in zip(memory["rss_start_mb"], memory["peak_rss_mb"], strict=True)
    )
    # DeepSpeed's CPU shared-memory kernel serves inference only: no worker may build it (a C++ JIT build).
    assert not any(extensions_dir.iterdir()), sorted(p.name for p in extensions_dir.iterdir())
    written = json.loads((root / f"bert-z{stage}").joinpath(*summary["metrics_path"].split("/")[-2:]).read_text())
    assert written["metrics"]["f1_macro"] == summary["metrics"]["f1_macro"]
    model_dir = Path(summary["model_dir"])
    assert json.loads((model_dir / "labels.json").read_text())["labels"] == ["negative", "neutral", "positive"]
    _reload_and_compare(model_dir, "classification")


def test_gpt2_causal_lm_trains_under_zero_3(matrix):
    from pathlib import Path

    summary = matrix[0]["gpt2-z3"]
    history = summary["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["eval_loss"] < history[0]["eval_loss"]
    assert summary["metrics"]["perplexity"] == pytest.approx(np.exp(summary["metrics"]["eval_loss"]), rel=1e-6)
    generated = summary["metrics"]["generations"]
    assert summary["metrics"]["generated_rows"] == 5 and 0 <= summary["metrics"]["rouge_l"] <= 1
    assert len(generated) == 5 and [g["row"] for g in generated] == sorted(g["row"] for g in generated)
    _reload_and_compare(Path(summary["model_dir"]), "causal-lm")


def test_fits_sharing_a_worker_group_each_ran_in_it_and_wrote_their_own_records(matrix):
    """run_fits: one worker group (the same processes) ran every config, each into its own run directory."""
    from pathlib import Path

    from trainer.records import FitRecords

    summaries, _ = matrix
    pids = set()
    for summary in summaries.values():
        starts = FitRecords(str(Path(summary["metrics_path"]).with_name("records"))).starts()
        assert [m.fold for m in starts] == [0], summary["name"]
        pids.add(starts[0].pid)
    assert len(pids) == 1 and len({s["metrics_path"] for s in summaries.values()}) == len(summaries)


def test_early_stopping_stops_a_stalled_fold_and_scores_and_exports_its_best_epoch(
    tmp_path, tiny_bert_dir, keyword_csv
):
    from pathlib import Path

    # A learning rate this small cannot move macro-F1: the fold stalls after its first epoch.
    # A quarter of the training rows picks the epoch (early_stopping_holdout); the validation rows score it.
    stopping = {"early_stopping_patience": 1, "early_stopping_holdout": 0.25}
    raw = _bert_cfg(tmp_path, tiny_bert_dir, keyword_csv, 1, learning_rate=1e-9, epochs=5, **stopping).model_dump(
        mode="json"
    )
    cfg = load_config(
        raw={**raw, "scaling": {**raw["scaling"], "num_workers": 1}}
    )  # ranks do not matter here; a worker start does
    summary = run_fit(cfg, export=True)
    history = summary["history"]
    assert len(history) == 2, history  # stopped after patience (1) epochs without improvement, not at 5
    record = json.loads(Path(summary["metrics_path"]).parent.joinpath("records", "fold-0.json").read_text())
    assert record["stopped_early"] and record["best_epoch"] == 0 and record["epochs_run"] == 2
    assert all("holdout_f1_macro" in h for h in history)  # the holdout was evaluated each epoch...
    assert record["n_train"] == summary["n_train"] - round(0.25 * summary["n_train"])  # ...and not trained on
    for key in ("f1_macro", "accuracy", "eval_loss"):
        assert summary["metrics"][key] == history[0][key]
    _reload_and_compare(Path(summary["model_dir"]), "classification")


def test_a_killed_worker_is_replaced_and_the_fit_resumes_from_its_last_checkpoint(
    tmp_path, tiny_bert_dir, keyword_csv, fault_markers, matrix
):
    """A worker SIGKILLed mid epoch 2: Ray Train replaces the worker group, which resumes from epoch 1's checkpoint
    and finishes with the scores of the fault-free run (the ZeRO-2 fit above, same config and seed). That a
    checkpoint without its state.json is never resumed from is unit-tested (tests/trainer/test_loop.py)."""
    from pathlib import Path

    raw = _bert_cfg(tmp_path, tiny_bert_dir, keyword_csv, 2, checkpoints=True).model_dump(mode="json")
    faulty = run_fit(load_config(raw={**raw, "name": "restart"}), export=False)
    assert (fault_markers / "killed").exists(), "the fault was not injected"
    clean = matrix[0]["bert-z2"]
    assert [h["epoch"] for h in faulty["history"]] == [0, 1, 2]
    records = Path(faulty["metrics_path"]).with_name("records")
    starts = [json.loads(p.read_text()) for p in sorted(records.glob("starts/fold-0-*.json"))]
    # One failure, one restart, from a checkpoint: after epoch 1 (or after epoch 0, if the kill beat Ray Train's
    # registration of epoch 1's checkpoint), never from scratch. Each worker group ran in its own processes.
    assert len(starts) == 2 and starts[0]["start_epoch"] == 0 and starts[1]["start_epoch"] in (1, 2), starts
    assert starts[0]["pid"] != starts[1]["pid"]
    assert json.loads((records / "fold-0.json").read_text())["resumes"] == 1
    assert faulty["metrics"]["eval_loss"] == pytest.approx(clean["metrics"]["eval_loss"], abs=1e-3)
    assert faulty["metrics"]["accuracy"] == pytest.approx(clean["metrics"]["accuracy"], abs=0.02)
