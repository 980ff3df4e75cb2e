"""`zerotune predict` treats new rows as the model's training did, as its export recorded it (zerotune.json
"preprocessing"), whatever the current config says: NFKC + whitespace normalisation, the trained text column, and for
a causal LM the chat template, the stop tokens and the sampling options; --device is checked."""

import json
import shutil

import pandas as pd
import pytest

from sweeps.cli import main
from trainer.chat import CHATML

LABELS = ["negative", "neutral", "positive"]


def _classifier(tiny_bert_dir, out, *, normalize: bool):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
        ignore_mismatched_sizes=True,
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    pre = {"normalize": normalize, "paired": False, "max_length": 32, "text_column": "review", "prompt_format": None}
    (out / "zerotune.json").write_text(json.dumps({"task": "classification", "labels": LABELS, "preprocessing": pre}))
    return out


def _probs(capsys, argv):
    assert main([*argv, "--format", "json"]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    return result, [[row[f"p_{n}"] for n in LABELS] for row in result["predictions"]]


def test_the_recorded_normalisation_and_text_column_apply_to_new_rows(tiny_bert_dir, tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    # fullwidth letters and runs of spaces: NFKC + whitespace folding makes them the plain text
    pd.DataFrame({"review": ["ＧＲＥＡＴ   phone", "GREAT phone", "ａｗｆｕｌ\tbattery", "awful battery"]}).to_csv(rows)
    normalized = _classifier(tiny_bert_dir, tmp_path / "norm", normalize=True)
    result, probs = _probs(capsys, ["predict", str(normalized), "--input", str(rows)])  # no --text-column: recorded
    assert probs[0] == probs[1] and probs[2] == probs[3]
    assert result["preprocessing"]["normalize"] is True and result["device"] == "cpu"
    raw = _classifier(tiny_bert_dir, tmp_path / "raw", normalize=False)
    _, probs = _probs(capsys, ["predict", str(raw), "--input", str(rows)])
    assert probs[0] != probs[1]  # the tokenizer alone does not fold fullwidth letters: training saw them unfolded


@pytest.fixture(scope="module")
def chat_lm(tiny_gpt2_dir, tmp_path_factory):
    """A causal LM exported from a chat fit: chatml recorded (the tokenizer has no template of its own)."""
    out = tmp_path_factory.mktemp("chat-lm")
    for f in tiny_gpt2_dir.iterdir():
        shutil.copy(f, out / f.name)
    pre = {"normalize": True, "max_length": 48, "text_column": "prompt", "prompt_format": "chat",
           "chat_template": CHATML, "stop_token_ids": []}  # fmt: skip
    (out / "zerotune.json").write_text(json.dumps({"task": "causal-lm", "preprocessing": pre}))
    return out


def _generate(chat_lm, prompt: str, max_new_tokens: int):
    """What the model continues with from `prompt` rendered as a chatml user turn, straight through transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_lm)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], chat_template=CHATML, tokenize=False,
                                   add_generation_prompt=True)  # fmt: skip
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    model = AutoModelForCausalLM.from_pretrained(chat_lm).eval()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)  # fmt: skip
    return out[0, ids.shape[1] :].tolist(), tok


def test_a_causal_lm_generates_from_its_recorded_chat_template_and_stops_at_its_recorded_tokens(
    chat_lm, tmp_path, capsys
):
    rows = tmp_path / "prompts.jsonl"
    pd.DataFrame({"id": [1, 2], "prompt": ["ｈｅｌｌｏ   there", "what is   up"]}).to_json(rows, orient="records",
                                                                                      lines=True)  # fmt: skip
    argv = ["predict", str(chat_lm), "--input", str(rows), "--max-new-tokens", "6", "--format", "json"]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    expected, tok = _generate(chat_lm, "hello there", 6)
    assert result["predictions"][0]["generated"] == tok.decode(expected, skip_special_tokens=True)
    assert result["task"] == "causal-lm" and result["new_tokens"] == 12 and result["predictions"][1]["id"] == 2

    meta = json.loads((chat_lm / "zerotune.json").read_text())
    meta["preprocessing"]["stop_token_ids"] = [expected[2]]  # e.g. the template's end-of-turn token
    (chat_lm / "zerotune.json").write_text(json.dumps(meta))
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)["predictions"][0]["generated"]
    assert first == tok.decode(expected[: expected.index(expected[2])], skip_special_tokens=True)


def test_sampling_options_are_checked_and_seeded(chat_lm, tmp_path, capsys):
    rows = tmp_path / "p.csv"
    pd.DataFrame({"prompt": ["hello there"]}).to_csv(rows, index=False)
    base = ["predict", str(chat_lm), "--input", str(rows), "--max-new-tokens", "8"]
    assert main([*base, "--temperature", "0.5"]) == 2
    assert "error: --temperature: temperature and top_p only apply when sampling" in capsys.readouterr().err
    assert main([*base, "--do-sample", "--top-p", "1.5"]) == 2
    sampled = [*base, "--do-sample", "--temperature", "1.5", "--top-p", "0.9", "--seed", "4", "--format", "json"]
    outputs = []
    for _ in range(2):
        assert main(sampled) == 0
        outputs.append(json.loads(capsys.readouterr().out)["predictions"][0]["generated"])
    assert outputs[0] == outputs[1]  # the seed makes sampling repeatable


def test_device_cuda_without_a_gpu_is_refused(chat_lm, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rows = tmp_path / "p.csv"
    pd.DataFrame({"prompt": ["hi"]}).to_csv(rows, index=False)
    assert main(["predict", str(chat_lm), "--input", str(rows), "--device", "cuda"]) == 2
    assert "error: --device: torch sees no CUDA device here" in capsys.readouterr().err
