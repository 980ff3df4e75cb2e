"""Long runs and generation, through real Ray Train workers: a tiny GPT-2 fine-tuned on prompt/response rows with
a checkpoint every few optimizer steps, once uninterrupted and once with its worker SIGKILLed mid-epoch, both fits
in ONE worker group (`run_fits`). The killed fit resumes inside its epoch from the last step checkpoint and must
retrace the uninterrupted fit's per-step loss curve; both generate for their validation rows (train.generate_eval).
"""

from pathlib import Path

import pytest

from sweeps.config import load_config
from sweeps.final.train import run_fits
from trainer.records import FitRecords

pytestmark = pytest.mark.integration
KILL_STEP = 20  # tests/conftest.py trainer_ray: rank 0 is killed before micro-batch 20 of epoch 0, in "/restart/" fits
EVERY = 8  # train.checkpoint_every_steps


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(trainer_ray):
    """The Ray instance of tests/trainer's integration modules, with the fault hooks (tests/conftest.py)."""


def _cfg(storage: Path, name: str, model_dir):
    return load_config(
        raw={
            "name": name,
            "task": "causal-lm",
            "model": {"path": str(model_dir), "max_length": 32, "dropout": 0.0},
            "data": {
                "path": "pkg:chatterbot_corpus/data/english",
                "format": "chatterbot",
                "prompt_column": "text",
                "response_column": "response",
                "max_rows": 80,
            },
            "train": {
                "learning_rate": 3e-3,
                "batch_size": 2,
                "epochs": 1,
                "warmup_ratio": 0.0,
                "checkpoint_every_steps": EVERY,
                "generate_eval": True,
                "generate_max_new_tokens": 6,
                "generate_max_rows": 6,
                "generate_samples": 3,
            },
            "deepspeed": {"zero_stage": 1},
            "scaling": {"num_workers": 1, "max_failures": 2},
            "storage": {"path": str(storage), "checkpoint_every_epoch": True},
        }
    )


@pytest.fixture(scope="module")
def fits(tmp_path_factory, tiny_gpt2_dir, fault_markers):
    root = tmp_path_factory.mktemp("steps")
    clean, killed = run_fits(
        [_cfg(root, "steps-clean", tiny_gpt2_dir), _cfg(root, "restart", tiny_gpt2_dir)], export=False
    )
    assert (fault_markers / "killed-mid-epoch").exists(), "the fault was not injected"
    return clean, killed


def _records(summary) -> FitRecords:
    return FitRecords(str(Path(summary["metrics_path"]).with_name("records")))


def test_a_fit_killed_mid_epoch_resumes_at_its_last_step_checkpoint_on_the_same_loss_curve(fits):
    clean, killed = fits
    starts = _records(killed).starts()
    # One restart, inside epoch 0, from the step checkpoint after micro-batch 16 (or 8, if the kill beat Ray Train's
    # registration of the latest), never from the epoch's start; each worker group in its own process.
    assert [(m.fold, m.start_epoch) for m in starts] == [(0, 0), (0, 0)], starts
    assert starts[0].start_step == 0 and starts[1].start_step in (2 * EVERY, EVERY), starts
    assert starts[0].pid != starts[1].pid
    record, reference = _records(killed).folds()[0], _records(clean).folds()[0]
    assert record.resumes == 1 and reference.resumes == 0
    steps = reference.step_losses[0]
    assert len(steps) > KILL_STEP and len(record.step_losses[0]) == len(steps)
    assert record.step_losses[0] == pytest.approx(steps, rel=1e-4, abs=1e-5)
    assert steps[-1] < steps[0]  # it learned: the curve is not flat
    assert record.metrics["eval_loss"] == pytest.approx(reference.metrics["eval_loss"], rel=1e-4)
    assert killed["history"][0]["train_loss"] == pytest.approx(clean["history"][0]["train_loss"], rel=1e-4)
    # The fit's progress record says where it got to: the epoch's last optimizer step.
    progress = _records(killed).progress()
    assert (progress.fold, progress.epoch, progress.step) == (0, 0, progress.steps) and progress.steps == len(steps)


def test_generation_scores_the_validation_rows_and_keeps_sample_generations(fits):
    clean, killed = fits
    metrics = clean["metrics"]
    assert metrics["generated_rows"] == 6
    assert 0.0 <= metrics["exact_match"] <= 1.0 and 0.0 <= metrics["rouge_l"] <= 1.0
    samples = _records(clean).folds()[0].metrics["generations"]
    assert len(samples) == 3 and [s["row"] for s in samples] == sorted(s["row"] for s in samples)
    for sample in samples:
        assert sample["prompt"] and sample["reference"] and isinstance(sample["generated"], str)
    # Greedy generation from the same weights: the resumed fit generates exactly what the uninterrupted one did.
    assert _records(killed).folds()[0].metrics["generations"] == samples
    assert killed["metrics"]["rouge_l"] == metrics["rouge_l"]
