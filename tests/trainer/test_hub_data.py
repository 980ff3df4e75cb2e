"""Hub data set names in data.path: recognised, read offline from a real datasets cache, and clear when absent."""

import pandas as pd
import pytest

from trainer.config import DataConfig
from trainer.tables import is_hub_name, read_table
from zerotune.errors import DataError

TRAIN = pd.DataFrame({"sentence": ["good film", "bad film", "fine film", "dull film"], "label": [1, 0, 1, 0]})
TEST = pd.DataFrame({"sentence": ["odd film"], "label": [0]})


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    from hub_datasets import cache_hub_dataset

    cache, work = tmp_path_factory.mktemp("hf-datasets"), tmp_path_factory.mktemp("hub-work")
    cache_hub_dataset(cache, "tinyorg/sst2", {"train": TRAIN, "test": TEST}, subset="plain_text", work=work)
    cache_hub_dataset(cache, "tinyimdb", {"unsupervised": TEST}, work=work)
    return cache


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    import datasets

    assert datasets.config.HF_HUB_OFFLINE  # conftest: no network here, as on an air-gapped cluster
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hub_cache)
    return hub_cache


@pytest.mark.parametrize(
    "path, hub",
    [
        ("imdb", True),
        ("stanfordnlp/sst2", True),
        ("nyu-mll/glue", True),
        ("data.csv", False),  # a missing file stays a missing file
        ("dir/train.parquet", False),
        ("./imdb", False),
        ("/data/imdb", False),
        ("s3://bucket/imdb", False),
        ("pkg:chatterbot_corpus/data/english", False),
        ("a/b/c", False),
        ("org--name", False),
    ],
)
def test_which_paths_are_hub_names(path, hub):
    assert is_hub_name(path) is hub


def test_an_existing_local_directory_is_not_a_hub_name(tmp_path, monkeypatch):
    (tmp_path / "imdb").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not is_hub_name("imdb")


def test_a_hub_name_reads_its_train_split_from_the_offline_cache(offline_cache):
    df = read_table(DataConfig(path="tinyorg/sst2", text_column="sentence"))
    assert list(df["sentence"]) == list(TRAIN["sentence"])
    df = read_table(DataConfig(path="tinyorg/sst2", subset="plain_text", split="test", revision="main"))
    assert list(df["sentence"]) == ["odd film"]
    # no train split: the only one there is
    assert list(read_table(DataConfig(path="tinyimdb"))["sentence"]) == ["odd film"]


@pytest.mark.parametrize(
    "kw, field, needle",
    [
        ({"path": "tinyorg/absent"}, "data.path", "not in the local datasets cache"),
        ({"path": "tinyorg/sst2", "subset": "other"}, "data.subset", "'other'"),
        ({"path": "tinyorg/sst2", "split": "validation"}, "data.split", "['test', 'train']"),
    ],
)
def test_what_the_cache_lacks_is_named_with_the_fix(offline_cache, kw, field, needle):
    with pytest.raises(DataError) as err:
        read_table(DataConfig(**kw))
    got, message, fix = err.value.problems[0]
    assert (got, needle in message) == (field, True), message
    if field == "data.path":
        assert "HF_HUB_OFFLINE=1" in message and "tinyorg/absent" in message
        assert "unset HF_HUB_OFFLINE" in fix and "load_dataset('tinyorg/absent')" in fix


def test_subset_and_split_are_refused_where_they_mean_nothing(tmp_path):
    path = tmp_path / "d.csv"
    TRAIN.to_csv(path, index=False)
    for kw, field in [
        ({"subset": "x"}, "data.subset"),
        ({"revision": "v1"}, "data.revision"),
        ({"split": "a"}, "data.split"),
    ]:
        with pytest.raises(DataError) as err:
            read_table(DataConfig(path=str(path), **kw))
        assert err.value.problems[0][0] == field


def test_a_datasets_directory_reads_the_named_split(tmp_path):
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_pandas(TRAIN), "test": datasets.Dataset.from_pandas(TEST)}
    ).save_to_disk(str(tmp_path / "ds"))
    assert list(read_table(DataConfig(path=str(tmp_path / "ds"), split="test"))["sentence"]) == ["odd film"]


def test_a_sweep_reads_a_hub_name_through_its_preflight(offline_cache):
    """`data.path: owner/name` in a sweep config, as `zerotune sweep validate|run` load it (no `format: hub`)."""
    from sweeps.config import load_config
    from sweeps.preflight.data import sweep_examples

    raw = {"data": {"path": "tinyorg/sst2", "text_column": "sentence", "subset": "plain_text"}, "folds": {"k": 2}}
    examples = sweep_examples(load_config(raw=raw))
    assert examples.texts == list(TRAIN["sentence"]) and examples.label_names == ["0", "1"]
    with pytest.raises(DataError) as err:
        sweep_examples(load_config(raw={**raw, "data": {**raw["data"], "path": "tinyorg/absent"}}))
    assert err.value.problems[0][0] == "data.path"
