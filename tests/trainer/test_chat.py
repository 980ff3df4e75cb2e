"""Chat and alpaca rows (data.format chat / alpaca): read, rendered with a chat template, loss on assistant turns."""

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from trainer.chat import CHATML, TEMPLATES, render, template_for
from trainer.config import DataConfig
from trainer.data import collate, to_examples, tokenize
from trainer.tables import read_table
from zerotune.errors import DataError

TURNS = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the weather like today?"},
    {"role": "assistant", "content": "It is sunny and warm."},
    {"role": "user", "content": "And tomorrow?"},
    {"role": "assistant", "content": "Rain, I am afraid."},
]


@pytest.fixture(scope="module")
def llama_tok(tmp_path_factory):
    """The tiny llama's byte-level BPE tokenizer (it ships no chat template)."""
    from transformers import AutoTokenizer

    from tiny_models import tiny_llama

    texts = [t["content"] for t in TURNS] + ["hello there how are you", "fine thanks"]
    return AutoTokenizer.from_pretrained(tiny_llama(tmp_path_factory.mktemp("chat-llama"), texts))


def _with_chatml_tokens(tok):
    """A copy whose <|im_start|>/<|im_end|> are single special tokens, as a chatml model's are."""
    import copy

    tok = copy.deepcopy(tok)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tok


def _expected_mask(tok, turns, max_length=512):
    """Per token of chatml written out by hand: is it part of an assistant turn's content or its <|im_end|>?"""
    text, answer = "", []
    for turn in turns:
        text += f"<|im_start|>{turn['role']}\n"
        start = len(text)
        text += turn["content"] + "<|im_end|>"
        if turn["role"] == "assistant":
            answer.append((start, len(text)))
        text += "\n"
    out = tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_length)
    mask = [any(a < end and b > start for start, end in answer) for a, b in out["offset_mapping"]]
    return out["input_ids"], np.array(mask)


@pytest.mark.parametrize("special", [True, False], ids=["im-tokens", "byte-split"])
def test_assistant_tokens_and_end_of_turn_are_the_only_labels(llama_tok, special):
    tok = _with_chatml_tokens(llama_tok) if special else llama_tok
    ids, mask = render(TURNS, tok, CHATML, max_length=512)
    want_ids, want_mask = _expected_mask(tok, TURNS)
    assert ids.tolist() == want_ids
    assert mask.tolist() == want_mask.tolist()
    # Through the batch: every assistant token is a label, every system/user token -100.
    examples = to_examples(
        pd.DataFrame({"messages": [TURNS]}), DataConfig(path="x", format="chat"), "causal-lm", seed=0
    )
    encoded = tokenize(examples, tok, "causal-lm", 512, chat_template="chatml")
    labels = collate(encoded, np.array([0]), "causal-lm")["labels"][0]
    decoded = tok.decode(labels[labels != -100].tolist())
    assert decoded == "It is sunny and warm.<|im_end|>Rain, I am afraid.<|im_end|>"
    others = tok.decode([i for i, lab in zip(ids.tolist(), labels.tolist(), strict=True) if lab == -100])
    assert all(t["content"] in others for t in TURNS if t["role"] != "assistant")
    assert "sunny" not in others and "Rain" not in others
    if special:
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        ends = [i for i, t in enumerate(ids.tolist()) if t == im_end]
        assert [bool(mask[i]) for i in ends] == [False, False, True, False, True]  # system, user, asst, user, asst


def test_truncation_keeps_the_mask_aligned(llama_tok):
    full_ids, full_mask = render(TURNS, llama_tok, CHATML, max_length=512)
    cut = int(np.flatnonzero(full_mask)[-1]) - 3  # inside the last answer
    ids, mask = render(TURNS, llama_tok, CHATML, max_length=cut)
    assert len(ids) == cut and ids.tolist() == full_ids[:cut].tolist() and mask.tolist() == full_mask[:cut].tolist()


def test_the_tokenizer_template_or_a_named_one_and_none_is_refused(llama_tok):
    with pytest.raises(DataError) as err:
        template_for(llama_tok, None)
    [(field, message, fix)] = err.value.problems
    assert field == "data.chat_template" and "no chat template" in message and "chatml" in fix
    assert template_for(llama_tok, "chatml") == CHATML
    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert template_for(llama_tok, jinja) == jinja
    import copy

    own = copy.deepcopy(llama_tok)
    own.chat_template = TEMPLATES["chatml"]  # the tokenizer's own template is used when none is configured
    assert template_for(own, None) == CHATML
    with pytest.raises(ValidationError, match="unknown template 'chatlm'; use one of"):
        DataConfig(path="x", format="chat", chat_template="chatlm")


def test_chat_files_in_jsonl_parquet_and_csv_with_sharegpt_turns(tmp_path):
    sharegpt = [{"from": "human", "value": "hi  there"}, {"from": "gpt", "value": "hello\nfriend "}]
    rows = [TURNS, sharegpt, [{"role": "user", "content": "no answer"}]]
    df = pd.DataFrame({"messages": rows, "topic": ["a", "b", "c"]})
    paths = {"jsonl": tmp_path / "d.jsonl", "parquet": tmp_path / "d.parquet", "csv": tmp_path / "d.csv"}
    df.to_json(paths["jsonl"], orient="records", lines=True)
    df.to_parquet(paths["parquet"])  # a Parquet list of structs reads back as numpy arrays of dicts
    df.assign(messages=[json.dumps(r) for r in rows]).to_csv(paths["csv"], index=False)
    for path in paths.values():
        cfg = DataConfig(path=str(path), format="chat")
        ex = to_examples(read_table(cfg), cfg, "causal-lm", seed=0)
        assert ex.turns[0] == TURNS
        # ShareGPT's speakers become roles; NFKC and trimmed ends, the line break kept
        assert ex.turns[1] == [
            {"role": "user", "content": "hi  there"},
            {"role": "assistant", "content": "hello\nfriend"},
        ]
        assert ex.dropped == {"no assistant turn": 1} and len(ex) == 2


@pytest.mark.parametrize(
    "cell, needle",
    [
        ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
        (["just text"], "a turn is str"),
        ("not json", "not a JSON list"),
    ],
)
def test_a_bad_chat_row_names_the_column_and_the_row(cell, needle):
    df = pd.DataFrame({"messages": [TURNS, cell]})
    with pytest.raises(DataError) as err:
        to_examples(df, DataConfig(path="x", format="chat"), "causal-lm", seed=0)
    [(field, message, fix)] = err.value.problems
    assert field == "data.messages_column" and needle in message and "row 2" in message and fix


def test_alpaca_rows_are_a_user_and_an_assistant_turn(llama_tok):
    df = pd.DataFrame(
        {"instruction": ["Add the numbers.", "Say hi."], "input": ["2 and 3", None], "output": ["5", "hi"]}
    )
    cfg = DataConfig(path="x", format="alpaca")
    ex = to_examples(df, cfg, "causal-lm", seed=0)
    assert ex.turns[0] == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert ex.turns[1][0] == {"role": "user", "content": "Say hi."}  # no input: the instruction alone
    encoded = tokenize(ex, llama_tok, "causal-lm", 128, chat_template="chatml")
    labels = collate(encoded, np.array([0, 1]), "causal-lm")["labels"]
    assert llama_tok.decode(labels[0][labels[0] != -100].tolist()) == "5<|im_end|>"
    # generation continues from the last answer's start: the prompt ends with the assistant's opening
    start = int(encoded.answers[0][0])
    assert llama_tok.decode(encoded.input_ids[0][:start].tolist()).endswith("<|im_start|>assistant\n")
    with pytest.raises(DataError) as err:
        to_examples(df.drop(columns="output"), cfg, "causal-lm", seed=0)
    assert err.value.problems[0][0] == "data.format" and "missing output" in err.value.problems[0][1]


def test_chat_rows_are_for_causal_lm_only():
    df = pd.DataFrame({"messages": [TURNS], "label": ["x"]})
    with pytest.raises(DataError) as err:
        to_examples(df, DataConfig(path="x", format="chat"), "classification", seed=0)
    assert err.value.problems[0][0] == "data.format" and "task: causal-lm" in err.value.problems[0][2]


def test_an_opening_assistant_turn_is_context_not_an_answer(llama_tok):
    opening = [{"role": "assistant", "content": "Welcome!"}, *TURNS[1:]]
    ids, mask = render(opening, llama_tok, CHATML, max_length=512)
    assert llama_tok.decode(ids[mask].tolist()) == "It is sunny and warm.<|im_end|>Rain, I am afraid.<|im_end|>"
    df = pd.DataFrame({"messages": [opening, opening[:1]]})
    ex = to_examples(df, DataConfig(path="x", format="chat"), "causal-lm", seed=0)
    assert len(ex) == 1 and ex.dropped == {"no assistant turn": 1}


def test_an_alpaca_json_array_file_and_a_json_lines_file_both_read(tmp_path):
    """LLaMA-Factory's alpaca_data.json is one indented JSON array of records; a .json file may also be JSON lines."""
    records = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ]
    array, lines = tmp_path / "alpaca_data.json", tmp_path / "lines.json"
    array.write_text("\n  " + json.dumps(records, indent=2), encoding="utf-8")
    lines.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    for path in (array, lines):
        cfg = DataConfig(path=str(path), format="alpaca")
        ex = to_examples(read_table(cfg), cfg, "causal-lm", seed=0)
        assert ex.turns == [
            [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}, {"role": "assistant", "content": "5"}],
            [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}],
        ]
