"""Generation evaluation (trainer.generate) in-process, on a real tiny GPT-2 and its real tokenizer: prompts and
references come from the encoding's loss mask, batched left-padded generation equals one-row generation, and the
scores are rouge-score's. The path through Ray Train workers: tests/trainer/test_steps_integration.py."""

from types import SimpleNamespace

import numpy as np
import pytest

from trainer.data import Examples, tokenize
from trainer.generate import generate_eval, generation_metrics, is_instruction_data, prompt_and_reference

PROMPTS = ["what is the capital of france", "say hello", "count to three please now"]
RESPONSES = ["paris is the capital", "hello", "one two three"]


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    encoded = tokenize(Examples(texts=PROMPTS, responses=RESPONSES), tokenizer, "causal-lm", max_length=32)
    return AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval(), tokenizer, encoded


def test_a_rows_prompt_and_reference_are_split_where_its_loss_starts(gpt2):
    _, tokenizer, encoded = gpt2
    assert is_instruction_data(encoded)
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        ids, reference = prompt_and_reference(encoded, row)
        assert tokenizer.decode(ids, skip_special_tokens=True) == prompt
        assert tokenizer.decode(reference, skip_special_tokens=True) == response
    plain = tokenize(Examples(texts=PROMPTS), tokenizer, "causal-lm", max_length=32)
    assert not is_instruction_data(plain)  # plain text: nothing to generate from


def test_exact_match_and_rouge_l_score_whitespace_normalised_text():
    metrics = generation_metrics(["the cat sat", "a  b", "x"], ["the cat", "a b ", "y"])
    # ROUGE-L F1: "the cat" against "the cat sat": precision 1, recall 2/3 -> 0.8; "a b" exact; "y" nothing.
    assert metrics["rouge_l"] == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    assert metrics["exact_match"] == pytest.approx(1 / 3) and metrics["generated_rows"] == 3


def test_batched_left_padded_generation_equals_each_row_generated_alone(gpt2):
    import torch

    model, tokenizer, encoded = gpt2
    train = SimpleNamespace(generate_max_new_tokens=5, generate_samples=2)
    w = SimpleNamespace(
        encoded=encoded,
        device=torch.device("cpu"),
        world=1,
        spec=SimpleNamespace(train=train, deepspeed=SimpleNamespace(zero_stage=0)),
    )
    rows = np.arange(len(PROMPTS))
    with torch.no_grad():
        # One batch of all three prompts (different lengths: left-padded), and a dummy batch that is skipped.
        out = generate_eval(w, SimpleNamespace(module=model), [(rows, True), (rows[:1], False)], tokenizer)
        alone = []
        for row in rows:
            prompt = torch.as_tensor(prompt_and_reference(encoded, row)[0], dtype=torch.long)[None]
            new = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=encoded.pad_id)[
                0, prompt.size(1) :
            ]
            alone.append(tokenizer.decode(new, skip_special_tokens=True))
    assert out["generated_rows"] == 3 and [s["row"] for s in out["generations"]] == [0, 1]  # generate_samples: 2
    assert [s["generated"] for s in out["generations"]] == alone[:2]
    assert out["generations"][1] == {"row": 1, "prompt": "say hello", "reference": "hello", "generated": alone[1]}
    expected = generation_metrics(RESPONSES, alone)
    assert out["rouge_l"] == pytest.approx(expected["rouge_l"]) and out["exact_match"] == expected["exact_match"]
