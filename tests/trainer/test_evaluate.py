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
    w = Worker(
        fit=0,
        spec=spec,
        encoded=tokenize(examples, tokenizer, "causal-lm", 32),
        folds=[],
        rank=0,
        world=1,
        device=torch.device("cpu"),
        bf16=False,
        records=None,
        hook=None,
        rss_start_mb=0.0,
    )
    engine = _Engine(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir))
    rows = np.arange(2)
    scored = evaluate(w, engine, rows)
    assert scored["generated_rows"] == 2 and "rouge_l" in scored
    picked = evaluate(w, engine, rows, generate=False)  # what loop.run_epoch asks of the holdout
    assert "rouge_l" not in picked and "generations" not in picked
    assert picked["eval_loss"] == scored["eval_loss"] and engine.training  # left in training mode
