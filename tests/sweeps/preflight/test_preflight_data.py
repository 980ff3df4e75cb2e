"""sweeps/preflight/data.py (named apart from tests/trainer/test_data.py): the held-out test split is checked
against the classes and groups before sklearn cuts it (sklearn raises a bare ValueError otherwise)."""

import numpy as np
import pandas as pd
import pytest

from sweeps.config import load_config
from sweeps.preflight.data import prepare_sweep
from trainer.data import tokenize
from zerotune.errors import ConfigError


def _cfg(tmp_path, rows: list[dict], data=None, **over):
    path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    raw = {"data": {"path": str(path), **(data or {})}, "search": {"space": {"batch_size": [2]}}, **over}
    return load_config(raw=raw)


def _three_classes(n_per_class: int, groups: int | None = None) -> list[dict]:
    rows = [{"text": f"t{i}", "label": "abc"[i % 3]} for i in range(3 * n_per_class)]
    for i, row in enumerate(rows):
        row["g"] = i % groups if groups else 0
    return rows


def test_a_stratified_test_split_smaller_than_the_classes_is_refused(tmp_path):
    """30 rows, 3 classes: 5 % is 2 test rows, and stratification needs one per class."""
    cfg = _cfg(tmp_path, _three_classes(10), folds={"k": 2, "test_fraction": 0.05})
    with pytest.raises(ConfigError) as err:
        prepare_sweep(cfg)
    [(field, message, fix)] = err.value.problems
    assert field == "folds.test_fraction" and "leaves 2 for the test split" in message and "3 classes" in message
    assert fix == "use folds.test_fraction between 0.1 and 0.9"
    examples, folds = prepare_sweep(_cfg(tmp_path, _three_classes(10), folds={"k": 2, "test_fraction": 0.1}))
    assert len(folds.test) == 3 and len(set(examples.labels[folds.test])) == 3


def test_a_group_test_split_must_leave_a_group_per_fold(tmp_path):
    """3 groups, k=2: a test_fraction of 0.5 takes 2 groups, leaving 1 group for 2 folds."""
    rows = _three_classes(4, groups=3)
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_cfg(tmp_path, rows, data={"group_column": "g"}, folds={"k": 2, "test_fraction": 0.5}))
    [(field, message, _)] = err.value.problems
    assert field == "folds.test_fraction" and "3 groups" in message and "which need 2" in message
    _, folds = prepare_sweep(_cfg(tmp_path, rows, data={"group_column": "g"}, folds={"k": 2, "test_fraction": 0.3}))
    assert len(folds.folds) == 2 and len(folds.test) == 4


def _chat_cfg(tmp_path, model_dir, **data):
    path = tmp_path / "chat.jsonl"
    turns = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(6)]
    pd.DataFrame({"messages": turns}).to_json(path, orient="records", lines=True)
    raw = {
        "task": "causal-lm",
        "model": {"path": str(model_dir)},
        "data": {"path": str(path), "format": "chat", "label_column": None, **data},
        "folds": {"k": 2},
        "search": {"space": {"batch_size": [2]}},
    }
    return load_config(raw=raw)


def test_chat_rows_need_a_chat_template_before_the_sweep_starts(tmp_path, tiny_gpt2_dir):
    """The tiny GPT-2's tokenizer has no chat template: refused with the fix, accepted with a named or Jinja one."""
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_chat_cfg(tmp_path, tiny_gpt2_dir))
    [(field, message, fix)] = err.value.problems
    assert field == "data.chat_template" and "has none" in message and "chatml" in fix
    examples, _ = prepare_sweep(_chat_cfg(tmp_path, tiny_gpt2_dir, chat_template="chatml"))
    assert len(examples) == 6 and examples.turns[0][1] == {"role": "assistant", "content": "a0"}
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_chat_cfg(tmp_path, tiny_gpt2_dir, chat_template="{% for m in messages %}{{ m }}"))
    assert err.value.problems[0][0] == "data.chat_template" and "does not parse" in err.value.problems[0][1]


def test_packing_is_refused_where_rows_are_scored_alone_or_open_with_virtual_tokens(tmp_path, tiny_gpt2_dir):
    with pytest.raises(ConfigError) as err:
        prepare_sweep(_cfg(tmp_path, _three_classes(4), data={"packing": True}))
    assert err.value.problems[0][0] == "data.packing" and "classification" in err.value.problems[0][1]
    cfg = _chat_cfg(tmp_path, tiny_gpt2_dir, chat_template="chatml", packing=True)
    prepare_sweep(load_config(raw={**cfg.model_dump(), "scaling": {"num_workers": 1}}))  # causal-lm packs
    prompt = load_config(raw={**cfg.model_dump(), "model": {"path": str(tiny_gpt2_dir), "method": "prompt-tuning"}})
    with pytest.raises(ConfigError) as err:
        prepare_sweep(prompt)
    assert err.value.problems[0][0] == "model.method" and "data.packing: false" in err.value.problems[0][2]


def test_packing_fewer_sequences_than_workers_is_refused_before_the_fit_trains_nothing(tmp_path, tiny_gpt2_dir):
    """6 short chat rows, k=2: each fold's 3 training rows pack into one sequence of 128 tokens, and 2 workers would
    each get none of it; at a max_length too short for two rows to share a sequence each fold packs into 3."""
    cfg = _chat_cfg(tmp_path, tiny_gpt2_dir, chat_template="chatml", packing=True)
    assert cfg.scaling.num_workers == 2
    with pytest.raises(ConfigError) as err:
        prepare_sweep(cfg)
    assert len(err.value.problems) == 2  # both folds
    field, message, fix = err.value.problems[0]
    assert field == "data.packing" and "pack into 1 sequences of up to 128 tokens, fewer than the 2 workers" in message
    assert "smaller model.max_length" in fix and "fewer scaling.num_workers" in fix and "data.packing: false" in fix
    one = load_config(raw={**cfg.model_dump(), "scaling": {"num_workers": 1}})
    rows = prepare_sweep(one)[0]  # the rows' token counts, to pick a max_length that keeps each row whole
    from trainer.model import load_tokenizer

    lengths = [
        len(ids)
        for ids in tokenize(rows, load_tokenizer(cfg.model), "causal-lm", 128, chat_template="chatml").input_ids
    ]
    short = {**cfg.model_dump(), "model": {"path": str(tiny_gpt2_dir), "max_length": max(lengths) + 1}}
    assert 2 * min(lengths) > max(lengths) + 1
    prepare_sweep(load_config(raw=short))


def test_a_chat_row_cut_before_its_answer_is_dropped_and_counted(tmp_path, tiny_gpt2_dir):
    """A long system turn fills model.max_length before the assistant speaks: the row is dropped (before, its last
    system token was trained on), counted in `dropped` like the rows without an assistant turn."""
    from trainer.data import ANSWER_CUT

    path = tmp_path / "chat.jsonl"
    turns = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(4)]
    turns.append([{"role": "system", "content": "be brief " * 40}, *turns[0]])
    turns.append([{"role": "user", "content": "q"}])  # nothing to train on either
    pd.DataFrame({"messages": turns}).to_json(path, orient="records", lines=True)
    raw = {
        "task": "causal-lm",
        "model": {"path": str(tiny_gpt2_dir), "max_length": 48},
        "data": {"path": str(path), "format": "chat", "label_column": None, "chat_template": "chatml"},
        "folds": {"k": 2},
        "search": {"space": {"batch_size": [1]}},
    }
    examples, folds = prepare_sweep(load_config(raw=raw))
    assert len(examples) == 4 and examples.dropped == {"no assistant turn": 1, ANSWER_CUT: 1}
    assert all("be brief" not in t[0]["content"] for t in examples.turns)
    assert sorted(np.concatenate([v for _, v in folds.folds]).tolist()) == [0, 1, 2, 3]


def test_a_gguf_files_chat_template_is_read_from_its_metadata_alone(tmp_path):
    """The reader skips every other field (a vocabulary's string array, numbers, arrays of numbers)."""
    import gguf

    from sweeps.preflight.data import gguf_string

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_token_list(["<s>", "hello", "world"])
    w.add_uint32("llama.block_count", 2)
    w.add_array("tokenizer.ggml.scores", [0.5, 0.25, 0.125])
    w.add_chat_template("{{ messages[0]['content'] }}")
    w.add_string("general.tail", "after")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert gguf_string(str(path), "tokenizer.chat_template") == "{{ messages[0]['content'] }}"
    assert gguf_string(str(path), "general.tail") == "after"
    assert gguf_string(str(path), "tokenizer.missing") is None
