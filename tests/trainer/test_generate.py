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


CHAT = [
    [
        {"role": "user", "content": "What is the weather like today?"},
        {"role": "assistant", "content": "It is sunny and warm."},
        {"role": "user", "content": "And tomorrow?"},  # the conversation ends with the user: not the reference
    ],
    [{"role": "user", "content": "And tomorrow?"}, {"role": "assistant", "content": "Rain, I am afraid."}],
]


@pytest.fixture(scope="module")
def chatml_llama(tmp_path_factory):
    """The tiny llama under chatml, <|im_start|>/<|im_end|> single special tokens while its eos is <|endoftext|>,
    its weights set so that greedy decoding is a fixed chain from the prompt's last token: an answer token,
    <|im_end|>, then another token for ever (each layer's output projections zeroed, so a position's logits depend on
    its own token alone: one basis vector per chain token in the embeddings, the next token's lm_head row on it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiny_models import tiny_llama

    texts = [t["content"] for row in CHAT for t in row] + ["user assistant"]
    path = tiny_llama(tmp_path_factory.mktemp("gen-llama"), texts)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    examples = Examples(texts=[""] * len(CHAT), turns=CHAT)
    encoded = tokenize(examples, tokenizer, "causal-lm", 128, chat_template="chatml")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.resize_token_embeddings(len(tokenizer))
    opening = {int(prompt_and_reference(encoded, r)[0][-1]) for r in range(len(CHAT))}
    assert len(opening) == 1  # every prompt ends with "<|im_start|>assistant\n"
    answer, after = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("sunny", "Rain"))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    chain = [opening.pop(), answer, im_end, after]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (token, following) in enumerate(zip(chain, [*chain[1:], after], strict=True)):
            model.model.embed_tokens.weight[token] = torch.nn.functional.one_hot(torch.tensor(i), 32).float()
            model.lm_head.weight[following, i] = 10.0
    return model, tokenizer, encoded, answer


def test_the_reference_is_the_answer_alone_and_generation_stops_at_the_end_of_turn_token(chatml_llama):
    import torch

    model, tokenizer, encoded, answer = chatml_llama
    assert model.generation_config.eos_token_id != tokenizer.convert_tokens_to_ids("<|im_end|>")
    train = SimpleNamespace(generate_max_new_tokens=6, generate_samples=2)
    w = SimpleNamespace(
        encoded=encoded,
        device=torch.device("cpu"),
        world=1,
        spec=SimpleNamespace(train=train, deepspeed=SimpleNamespace(zero_stage=0)),
    )
    with torch.no_grad():
        out = generate_eval(w, SimpleNamespace(module=model), [(np.arange(len(CHAT)), True)], tokenizer)
    first, second = out["generations"]
    reference = prompt_and_reference(encoded, 0)[1]  # the answer's tokens: its <|im_end|>, and no user turn after
    assert tokenizer.decode(reference) == "It is sunny and warm.<|im_end|>"
    assert first["reference"] == "It is sunny and warm."  # not "... user\nAnd tomorrow?"
    assert first["prompt"].endswith("What is the weather like today?\nassistant\n")
    assert second["reference"] == "Rain, I am afraid."
    # Greedy: the answer token, then <|im_end|>, where it stops (else it would go on to "Rain" tokens).
    assert [g["generated"] for g in out["generations"]] == [tokenizer.decode([answer])] * 2
