"""The exported model card (trainer.card): huggingface_hub's ModelCard with hub metadata (base model, pipeline tag,
license, data set, a model-index of the cross-validated mean and std and the test metrics) that parses back to the
same metadata, and a body showing config, preprocessing and environment."""

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from trainer.card import build_card, dataset_name
from trainer.config import DataConfig, DeepSpeedConfig, ModelConfig, TrainConfig
from trainer.preprocessing import recipe
from trainer.spec import FitSpec
from zerotune.environment import record

RESULTS = {"cv": {"metric": "f1_macro", "mean": 0.81234567, "std": 0.0456, "k": 5}, "test": {"f1_macro": 0.79,
           "accuracy": 0.8}}  # fmt: skip


def _spec(model_path, task="classification", data_path="stanfordnlp/sst2", **model):
    model_cfg = ModelConfig(path=str(model_path), **model)
    return FitSpec(
        task=task, model=model_cfg, train=TrainConfig(learning_rate=3e-4), deepspeed=DeepSpeedConfig(zero_stage=2),
        use_gpu=False, seed=0, metric="f1_macro", mode="max", card={"data": "twenty rows"},
        preprocessing=recipe(DataConfig(path=data_path, text_pair_column="b"), model_cfg, task),
    )  # fmt: skip


def test_the_card_metadata_round_trips_with_the_cv_estimate_and_test_metrics_in_its_model_index():
    card = build_card(_spec("acme/base-model"), ["neg", "pos"], fmt="full", results=RESULTS,
                      environment=record(kind="refit"))  # fmt: skip
    parsed = ModelCard(str(card))
    assert parsed.data.to_dict() == card.data.to_dict()
    meta = parsed.data.to_dict()
    assert meta["base_model"] == "acme/base-model" and meta["pipeline_tag"] == "text-classification"
    assert meta["datasets"] == ["stanfordnlp/sst2"] and meta["library_name"] == "transformers"
    name, results = model_index_to_eval_results(meta["model-index"])
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    assert got == {
        ("cross-validation", "f1_macro"): 0.812346,
        ("cross-validation", "f1_macro_std"): 0.0456,
        ("test", "f1_macro"): 0.79,
        ("test", "accuracy"): 0.8,
    }
    assert {r.task_type for r in results} == {"text-classification"} and name == "base-model-zerotune-classification"
    body = parsed.text
    assert "| f1_macro (5-fold cross-validated mean) | cross-validation | 0.8123 |" in body
    assert "- paired: True" in body and "- data: twenty rows" in body and "- labels: neg, pos" in body
    assert "| torch |" in body and "| gpus |" in body and "| git commit |" in body


def test_a_local_base_models_own_card_gives_the_license_and_no_hub_base_model(tiny_bert_dir, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_bert_dir, base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a base model\n")
    meta = build_card(_spec(base, data_path=str(tmp_path / "rows.csv")), None, fmt="full").data.to_dict()
    assert meta["license"] == "mit" and "base_model" not in meta and "model-index" not in meta
    assert meta["datasets"] == ["rows.csv"]  # the file's name, not the training machine's path


@pytest.mark.parametrize(
    ("task", "tag", "fmt", "library"),
    [
        ("regression", "text-classification", "full", "transformers"),
        ("causal-lm", "text-generation", "adapter", "peft"),
    ],
)
def test_the_pipeline_tag_and_library_follow_the_task_and_export(task, tag, fmt, library):
    meta = build_card(_spec("acme/base-model", task=task), None, fmt=fmt, results=RESULTS).data.to_dict()
    assert meta["pipeline_tag"] == tag and meta["library_name"] == library
    assert {r["task"]["type"] for r in meta["model-index"][0]["results"]} == {tag}


def test_dataset_names():
    assert dataset_name("pkg:chatterbot_corpus/data/english") == "chatterbot_corpus"
    assert dataset_name("imdb") == "imdb" and dataset_name("/data/x/train.jsonl") == "train.jsonl"
