"""Every advertised training path the ZeRO matrix and the method fits do not already run, fitted once for real
(issue 17): SGD under ZeRO 1-3 (as a trial of a search over the optimizer), the cosine and constant schedules with
warmup under ZeRO 0 and 3, regression on the fp32 training loss (trainer.loss; its bf16 behaviour is unit-tested in
test_loss.py, since bf16 training is refused on CPU), LoRA on a causal LM with merged and adapter export, and ZeRO
offload of the optimizer (ZeRO 2) and of optimizer and parameters (ZeRO 3) with DeepSpeed's CPU Adam.

All rows are fits of ONE worker group of one worker (`run_fits`: its start is paid once). Each row's loss must fall,
its effective DeepSpeed config must be the path's, and its exported model must reload with plain transformers/peft
and predict what the engine predicted on the probe rows.

CPU Adam is a C++ op that DeepSpeed JIT-builds (ninja + g++): the driver builds it first under torch's extension
cache root, kept between runs (~60 s on this 2-core machine the first time, then only loaded), and this worker
group looks there. The session's other trainer fits keep their own, empty, extension
directory (conftest.extensions_dir): nothing is built for them. Where the op cannot build, the offload rows skip
with the build's own error and the other rows still run.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeps.config import load_config
from sweeps.final.train import run_fits
from trainer.records import FitRecords

pytestmark = pytest.mark.integration

# Per task: its model, data and a learning rate and step count at which a random tiny model learns visibly.
TASKS = {
    "classification": {"model": "bert", "label_column": "label", "rows": 200, "steps": 16, "lr": 1e-2},
    "regression": {"model": "bert", "label_column": "score", "rows": 240, "steps": 24, "lr": 3e-3},
    "causal-lm": {"model": "gpt2", "rows": 120, "steps": 12, "lr": 3e-2},
}
SGD = {"learning_rate": 0.5}  # full fine-tuning of the causal LM, where SGD moves a random model in a few steps
LORA = {"method": "lora", "lora": {"rank": 4, "dropout": 0.0}}
# name -> (task, settings merged into the config's groups)
PATHS = {
    "sgd-z1": ("causal-lm", {"train": SGD, "deepspeed": {"zero_stage": 1}}),
    "sgd-z2": ("causal-lm", {"train": SGD, "deepspeed": {"zero_stage": 2}}),
    "sgd-z3": ("causal-lm", {"train": SGD, "deepspeed": {"zero_stage": 3}}),
    "cosine-z0": ("classification", {"train": {"schedule": "cosine"}, "deepspeed": {"zero_stage": 0}}),
    "cosine-z3": ("classification", {"train": {"schedule": "cosine"}, "deepspeed": {"zero_stage": 3}}),
    "constant-z0": ("classification", {"train": {"schedule": "constant"}, "deepspeed": {"zero_stage": 0}}),
    "constant-z3": ("classification", {"train": {"schedule": "constant"}, "deepspeed": {"zero_stage": 3}}),
    "regression-z0": ("regression", {"deepspeed": {"zero_stage": 0}}),
    "lora-causal-merged-z3": (
        "causal-lm",
        {"model": {**LORA, "export_format": "merged"}, "deepspeed": {"zero_stage": 3}},
    ),
    "lora-causal-adapter-z2": (
        "causal-lm",
        {"model": {**LORA, "export_format": "adapter"}, "deepspeed": {"zero_stage": 2}},
    ),
    # Recomputed activations (trainer.model.enable_checkpointing) through a real ZeRO-2 fit and its export.
    "checkpointing-z2": ("causal-lm", {"train": {"gradient_checkpointing": True}, "deepspeed": {"zero_stage": 2}}),
    "offload-optimizer-z2": ("classification", {"deepspeed": {"zero_stage": 2, "offload_optimizer": True}}),
    "offload-all-z3": (
        "classification",
        {"deepspeed": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True}},
    ),
}
OFFLOAD = [name for name in PATHS if name.startswith("offload")]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(trainer_ray):
    """The Ray instance of tests/trainer's integration modules (tests/conftest.py)."""


def _raw(name, root, models, data_csv):
    task, settings = PATHS[name]
    t = TASKS[task]
    if task == "causal-lm":
        data = {"path": "pkg:chatterbot_corpus/data/english", "format": "chatterbot", "prompt_column": "text"}
        data["response_column"] = "response"
    else:
        data = {"path": str(data_csv), "label_column": t["label_column"]}
    raw = {
        "name": name,
        "task": task,
        "model": {"path": str(models[t["model"]]), "max_length": 32, "dropout": 0.0},
        "data": {**data, "max_rows": t["rows"]},
        "train": {
            "learning_rate": t["lr"],
            "batch_size": 8,
            "epochs": 3,
            "max_steps_per_epoch": t["steps"],
            "warmup_ratio": 0.25,
        },
        "deepspeed": {},
        "scaling": {"num_workers": 1},
        "storage": {"path": str(root), "checkpoint_every_epoch": False},  # no restart here
    }
    for group, values in settings.items():
        raw[group] = {**raw[group], **values}
    return raw


def _sgd_trial(raw):
    """A sweep searching optimizer [adamw, sgd] validates, and its sgd trial's config is what this row fits."""
    from sweeps.search.space import apply_params

    cfg = load_config(raw={**raw, "search": {"space": {"optimizer": ["adamw", "sgd"]}}})
    train, deepspeed, model = apply_params(cfg, {"optimizer": "sgd"})
    assert train.optimizer == "sgd" and train.momentum == 0.9
    return cfg.model_copy(update={"train": train, "deepspeed": deepspeed, "model": model})


def _cpu_adam_build_error(cache: str) -> str | None:
    """Build (or load from `cache`) DeepSpeed's CPU Adam op in this process; the build's error, or None."""
    import os

    from deepspeed.ops.op_builder import CPUAdamBuilder

    before = os.environ.get("TORCH_EXTENSIONS_DIR")
    os.environ["TORCH_EXTENSIONS_DIR"] = cache
    try:
        CPUAdamBuilder().load(verbose=False)
    except Exception as exc:  # noqa: BLE001 - whatever the build raised is the skip reason
        return f"DeepSpeed's CPU Adam does not build here: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        if before is None:
            del os.environ["TORCH_EXTENSIONS_DIR"]
        else:
            os.environ["TORCH_EXTENSIONS_DIR"] = before
    return None


@pytest.fixture(scope="module")
def fits(tmp_path_factory, tiny_bert_dir, tiny_gpt2_dir, keyword_csv):
    """Every path's fit, in turn on ONE worker group. Returns (summaries by name, why offload was skipped or None)."""
    from torch.utils.cpp_extension import get_default_build_root

    import trainer.launch

    root = tmp_path_factory.mktemp("paths")
    models = {"bert": tiny_bert_dir, "gpt2": tiny_gpt2_dir}
    cache = get_default_build_root()
    skipped = _cpu_adam_build_error(cache)
    names = [name for name in PATHS if not (skipped and name in OFFLOAD)]
    cfgs = []
    for name in names:
        raw = _raw(name, root, models, keyword_csv)
        cfgs.append(_sgd_trial(raw) if name.startswith("sgd") else load_config(raw=raw))

    build = trainer.launch.build_trainer

    def with_extension_cache(**kwargs):
        # This group's workers find the op the driver built; trainer_ray's workers look in extensions_dir.
        trainer = build(**kwargs)
        trainer.run_config.worker_runtime_env = {"env_vars": {"TORCH_EXTENSIONS_DIR": cache}}
        return trainer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.launch, "build_trainer", with_extension_cache)
        summaries = run_fits(cfgs, export=True)
    return {s["name"]: s for s in summaries}, skipped


def _reload(model_dir: Path, task: str, meta: dict):
    """The exported model through plain transformers (full or merged) or peft (adapter over the base model)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    if meta["format"] != "adapter":
        return cls.from_pretrained(model_dir).eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(cls.from_pretrained(meta["base_model"]), model_dir).eval()


@pytest.mark.parametrize("name", list(PATHS))
def test_path_trains_and_its_export_predicts_what_the_engine_did(fits, extensions_dir, name):
    summaries, skipped = fits
    if skipped and name in OFFLOAD:
        pytest.skip(skipped)
    task, settings = PATHS[name]
    summary = summaries[name]

    losses = [h["train_loss"] for h in summary["history"]]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses
    if settings.get("model", {}).get("method") != "lora":  # LoRA on a random causal LM moves it least (~1 %)
        assert losses[2] < 0.9 * losses[0], losses
    # No fit of this group built anything in the session's extension directory (CPU Adam went to the cache).
    assert not any(extensions_dir.iterdir()), sorted(p.name for p in extensions_dir.iterdir())

    ds = FitRecords(str(Path(summary["metrics_path"]).with_name("records"))).deepspeed()
    assert ds["zero_optimization"]["stage"] == settings["deepspeed"]["zero_stage"]
    if name.startswith("sgd"):
        assert ds["optimizer"]["type"] == "SGD" and ds["zero_allow_untested_optimizer"] is True
    schedule = settings.get("train", {}).get("schedule", "linear")
    scheduler = {"linear": "WarmupDecayLR", "cosine": "WarmupCosineLR", "constant": "WarmupLR"}[schedule]
    steps = min(TASKS[task]["steps"], math.ceil(summary["n_train"] / 8)) * 3
    assert ds["scheduler"]["type"] == scheduler and ds["scheduler"]["params"]["warmup_num_steps"] == round(steps / 4)
    if name in OFFLOAD:  # the config's AdamW with offload, which DeepSpeed runs as its CPU Adam
        assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
        assert ("offload_param" in ds["zero_optimization"]) == settings["deepspeed"].get("offload_params", False)
        assert "torch_adam" not in ds["optimizer"]["params"] and ds["zero_force_ds_cpu_optimizer"] is True

    model_dir = Path(summary["model_dir"])
    meta = json.loads((model_dir / "zerotune.json").read_text())
    expected_format = settings.get("model", {}).get("export_format", "full")
    assert meta["format"] == expected_format
    if expected_format == "merged":
        assert not (model_dir / "adapter_config.json").exists()
    model = _reload(model_dir, task, meta)
    if task == "causal-lm":  # checkpointing turns the KV cache off for training only: the export generates with it
        assert model.config.use_cache is True
    probe = json.loads((model_dir / "engine_predictions.json").read_text())
    assert probe["rows"]
    for row, expected in zip(probe["rows"], probe["values"], strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long))
        if task == "causal-lm":  # the probe keeps each position's argmax token
            assert logits.logits[0].argmax(-1).tolist() == expected[: len(row)]
        else:
            np.testing.assert_allclose(logits.logits[0].numpy(), expected, atol=1e-4)


def test_the_embedded_ray_started_no_preemption_watcher(fits):
    """cluster.local turns Ray Train's preemption watcher off on one machine (an actor process per fit, with nothing
    to watch): none was started for these fits, nor any other of this Ray."""
    import ray
    from ray.util.state import list_actors

    # This Ray's own address: with other Rays of the session on this machine, auto-detection finds none.
    where = {"address": ray.get_runtime_context().gcs_address, "raise_on_missing_output": False}
    watchers = list_actors(filters=[("class_name", "=", "PreemptionWatcher")], **where)
    controllers = list_actors(filters=[("class_name", "=", "TrainController")], **where)
    assert controllers and not watchers, (len(controllers), watchers)
