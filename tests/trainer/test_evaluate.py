"""trainer/evaluate.py in-process on a real tiny GPT-2: generation (train.generate_eval) runs only where its result
is read. The engine here is the interface evaluate uses of DeepSpeed's (a module called for logits, eval/train, and
`.module` for generate); the path through real DeepSpeed engines: tests/trainer/test_steps_integration.py."""

import numpy as np
import torch

from trainer.config import DeepSpeedConfig, ModelConfig, TrainConfig
from trainer.data import Examples, tokenize
from trainer.evaluate import evaluate
from trainer.spec import FitSpec
from trainer.worker import Worker


class _Engine(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.module = model

    def forward(self, **inputs):
        return self.module(**inputs)


def test_generation_runs_on_validation_rows_and_not_on_the_early_stopping_holdout(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    examples = Examples(texts=["say hello", "count to three"], responses=["hello", "one two three"])
    spec = FitSpec(
        task="causal-lm",
        model=ModelConfig(path=str(tiny_gpt2_dir)),
        train=TrainConfig(generate_eval=True, generate_max_new_tokens=2),
        deepspeed=DeepSpeedConfig(),
        use_gpu=False,
        seed=0,
        metric="eval_loss",
        mode="min",
    )
    w = _rank0(spec, tokenize(examples, tokenizer, "causal-lm", 32))
    engine = _Engine(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir))
    rows = np.arange(2)
    scored = evaluate(w, engine, rows)
    assert scored["generated_rows"] == 2 and "rouge_l" in scored
    picked = evaluate(w, engine, rows, generate=False)  # what loop.run_epoch asks of the holdout
    assert "rouge_l" not in picked and "generations" not in picked
    assert picked["eval_loss"] == scored["eval_loss"] and engine.training  # left in training mode


def test_worst_classified_keeps_the_lowest_true_class_probabilities_with_their_texts():
    from trainer.evaluate import WORST_ROWS_KEPT, worst_classified

    n = WORST_ROWS_KEPT + 5
    rows = np.arange(100, 100 + n)  # validation rows are sweep row ids, not positions
    labels = np.zeros(n, dtype=np.int64)
    true_prob = np.linspace(0.9, 0.05, n)  # the last row is the worst
    probs = np.stack([true_prob, 1 - true_prob], axis=1)
    texts = [f"text {i}" for i in range(100 + n)]
    worst = worst_classified(rows, probs, labels, ["neg", "pos"], texts)
    assert len(worst) == WORST_ROWS_KEPT
    assert worst[0] == {
        "row": 100 + n - 1,
        "text": f"text {100 + n - 1}",
        "label": "neg",
        "predicted": "pos",
        "confidence": 0.95,
        "true_prob": 0.05,
    }
    assert [w["true_prob"] for w in worst] == sorted(w["true_prob"] for w in worst)
    assert worst_classified(rows[:1], probs[:1], labels[:1], ["neg", "pos"], None)[0]["text"] is None
    # a row classified right, if hesitantly, comes after every mistake, however close the mistake was
    three = np.array([[0.4, 0.3, 0.3], [0.45, 0.55, 0.0]])
    mixed = worst_classified(np.arange(2), three, np.array([0, 0]), ["a", "b", "c"], None)
    assert [(w["row"], w["predicted"]) for w in mixed] == [(1, "b"), (0, "a")]


def test_worst_regressed_keeps_the_largest_errors_and_cuts_long_texts():
    from trainer.evaluate import TEXT_CHARS, worst_regressed

    preds, targets = np.array([1.0, 5.0, 2.0]), np.array([1.0, 1.0, 3.0])
    worst = worst_regressed(np.arange(3), preds, targets, ["a", "b" * 1000, "c"])
    assert [(w["row"], w["error"]) for w in worst] == [(1, 4.0), (2, 1.0), (0, 0.0)]
    assert len(worst[0]["text"]) == TEXT_CHARS and worst[0]["text"].endswith("…")


def test_a_classification_fold_records_its_worst_out_of_fold_rows(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [f"row {i} says {'yes' if i % 2 else 'no'}" for i in range(6)]
    examples = Examples(texts=texts, labels=np.arange(6) % 2, label_names=["no", "yes"])
    spec = FitSpec(
        task="classification",
        model=ModelConfig(path=str(tiny_bert_dir)),
        train=TrainConfig(eval_batch_size=2),
        deepspeed=DeepSpeedConfig(),
        use_gpu=False,
        seed=0,
        metric="f1_macro",
        mode="max",
    )
    w = _rank0(spec, tokenize(examples, tokenizer, "classification", 16))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    scored = evaluate(w, _Engine(model), np.array([1, 2, 5]))
    worst = scored["worst_rows"]
    assert sorted(r["row"] for r in worst) == [1, 2, 5]
    assert {r["row"]: (r["text"], r["label"]) for r in worst}[2] == ("row 2 says no", "no")
    assert all(r["predicted"] in ("no", "yes") and 0.5 <= r["confidence"] <= 1 for r in worst)


def _rank0(spec, encoded) -> Worker:
    """The only rank of a one-process world on the CPU, with nothing recorded."""
    return Worker(
        fit=0, spec=spec, encoded=encoded, folds=[], rank=0, world=1, device=torch.device("cpu"),
        bf16=False, records=None, hook=None, rss_start_mb=0.0,
    )  # fmt: skip
