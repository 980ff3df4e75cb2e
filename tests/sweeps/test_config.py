import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeps.config import config_help, load_config, parse_overrides
from zerotune.errors import ConfigError

BASE = {"data": {"path": "x.csv"}}


def _problems(raw=None, overrides=None):
    with pytest.raises(ConfigError) as info:
        load_config(raw=raw if raw is not None else BASE, overrides=overrides)
    return info.value.problems


def test_defaults_follow_the_task():
    cfg = load_config(raw=BASE)
    assert (cfg.metric, cfg.mode) == ("f1_macro", "max")
    cfg = load_config(raw={**BASE, "task": "regression", "data": {"path": "x.csv", "label_column": "score"}})
    assert (cfg.metric, cfg.mode) == ("mse", "min")
    assert load_config(raw={**BASE, "task": "causal-lm"}).metric == "eval_loss"


def test_unknown_key_gets_did_you_mean():
    [(field, message, fix)] = _problems({**BASE, "train": {"learnig_rate": 0.1}})
    assert field == "train.learnig_rate" and message == "unknown key"
    assert fix == "did you mean 'learning_rate'?"


def test_every_problem_is_reported_at_once():
    problems = _problems({**BASE, "train": {"epochs": 0, "batch_size": "big"}, "folds": {"k": 1}, "seed": -1})
    fields = {p[0] for p in problems}
    assert fields == {"train.epochs", "train.batch_size", "folds.k", "seed"}


def test_empty_ranges_unknown_metric_and_cpu_fp16():
    assert (
        _problems({**BASE, "search": {"space": {"learning_rate": {"low": 1e-3, "high": 1e-5}}}})[0][0]
        == "search.space.learning_rate"
    )
    assert "empty range" in _problems({**BASE, "search": {"space": {"epochs": {"low": 3, "high": 2}}}})[0][1]
    [(field, message, fix)] = _problems({**BASE, "search": {"metric": "f2"}})
    assert field == "search.metric" and "f1_macro" in fix
    assert "not supported on CPU" in _problems({**BASE, "deepspeed": {"precision": "fp16"}})[0][1]


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        raw=BASE, overrides=["train.epochs=3", "train.learning_rate=1e-4", "scaling.use_gpu=true", "name=abc"]
    )
    assert (
        cfg.train.epochs == 3 and cfg.train.learning_rate == 1e-4 and cfg.scaling.use_gpu is True and cfg.name == "abc"
    )
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match="group.field=value"):
        parse_overrides(["train.epochs"])


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", ".hidden", ""])
def test_names_cannot_escape_storage(name):
    assert _problems({**BASE, "name": name})[0][0] == "name"


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="config"):
        load_config(path)
    path.write_text("data: [unclosed\n")
    [(field, message, _)] = _problems_file(path)
    assert field == "config" and "line" in message


def _problems_file(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_help_lists_documented_fields():
    text = config_help()
    assert "search.space.learning_rate" in text and "Learning-rate range" in text
    assert "deepspeed.zero_stage [2]" in text


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(
                st.sampled_from(["data", "train", "search", "folds", "path", "epochs", "k", "space", "zz"]),
                kids,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_loader_fuzz_only_raises_config_errors(tree):
    """Any YAML-shaped input either loads or raises ConfigError naming a field: never another exception."""
    try:
        load_config(raw=tree if isinstance(tree, dict) else {"data": tree})
    except ConfigError as exc:
        assert all(field for field, _, _ in exc.problems)


def test_uris_with_credentials_are_refused_without_repeating_them():
    raw = {"data": {"path": "s3://AKIAXYZ:sup3rsecret@bucket/d.csv"}, "storage": {"path": "s3://k:s3cr3t@bucket/runs"}}
    with pytest.raises(ConfigError) as err:
        load_config(raw=raw)
    fields = [p[0] for p in err.value.problems]
    assert fields == ["storage.path", "data.path"]
    assert "sup3rsecret" not in str(err.value) and "s3cr3t" not in str(err.value)
    load_config(raw={"data": {"path": "s3://bucket/d.csv"}, "storage": {"path": "s3://bucket/runs"}})


def test_the_seed_fits_numpy_and_sklearn():
    """sklearn's random_state and numpy's legacy seeding take 32-bit seeds: a larger one would fail the folds."""
    assert load_config(raw={**BASE, "seed": 2**32 - 1}).seed == 2**32 - 1
    [(field, message, _)] = _problems({**BASE, "seed": 2**32})
    assert field == "seed" and "4294967295" in message


def test_cpus_per_worker_is_what_ray_can_reserve():
    assert load_config(raw={**BASE, "scaling": {"cpus_per_worker": 1.5}}).scaling.cpus_per_worker == 1.5
    for bad in (0.00001, 0.00015, float("inf")):
        [(field, _, _)] = _problems({**BASE, "scaling": {"cpus_per_worker": bad}})
        assert field == "scaling.cpus_per_worker", bad


def test_grace_folds_cannot_exceed_the_folds():
    """Ray's ASHA refuses grace_period > max_t (the folds) when the sweep starts; validate refuses it first."""
    [(field, message, fix)] = _problems({**BASE, "folds": {"k": 3}, "search": {"scheduler": {"grace_folds": 4}}})
    assert field == "search.scheduler.grace_folds" and "folds.k=3" in message and "<= 3" in fix
    load_config(raw={**BASE, "folds": {"k": 3}, "search": {"scheduler": {"type": "none", "grace_folds": 4}}})


@pytest.mark.parametrize(
    ("task", "data", "field"),
    [
        ("classification", {"text_column": "t", "label_column": "t"}, "data.label_column"),
        ("classification", {"text_column": "t", "text_pair_column": "t"}, "data.text_pair_column"),
        ("classification", {"label_column": "y", "group_column": "y"}, "data.group_column"),
        ("regression", {"text_column": "y", "label_column": "y"}, "data.label_column"),
        ("causal-lm", {"prompt_column": "q", "response_column": "q"}, "data.response_column"),
    ],
)
def test_one_column_is_not_used_twice(task, data, field):
    [(where, message, fix)] = _problems({"task": task, "data": {"path": "x.csv", **data}})
    assert where == field and "is also data." in message and field in fix


def test_a_group_may_be_a_text_column_and_unused_columns_do_not_clash():
    load_config(raw={"data": {"path": "x.csv", "group_column": "text"}})  # duplicate texts stay in one fold
    load_config(raw={"task": "causal-lm", "data": {"path": "x.csv", "text_column": "label"}})  # no label in causal-lm


def test_an_error_shows_a_long_value_shortened():
    [(field, message, _)] = _problems({"data": {"path": "x.csv", "text_column": [["x"] * 1000] * 1000}})
    assert field == "data.text_column" and len(message) < 200 and "..." in message


def test_sgd_runs_under_zero_but_not_with_optimizer_offload():
    """DeepSpeed's CPU optimizer for ZeRO-Offload is Adam only; under ZeRO 1-3 SGD is allowed explicitly."""
    from trainer.ds_config import build_deepspeed_config

    cfg = load_config(raw={**BASE, "train": {"optimizer": "sgd"}})  # zero_stage defaults to 2
    ds = build_deepspeed_config(ds=cfg.deepspeed, train=cfg.train, world_size=1, steps_per_epoch=4, device="cpu")
    assert ds["zero_allow_untested_optimizer"] is True and ds["optimizer"]["type"] == "SGD"
    offload = {"zero_stage": 2, "offload_optimizer": True}
    [(field, message, fix)] = _problems({**BASE, "train": {"optimizer": "sgd"}, "deepspeed": offload})
    assert field == "train.optimizer" and "offload_optimizer" in message and fix


def test_generation_needs_instruction_data_and_its_metrics_need_generation():
    lm = {"path": "x.csv", "prompt_column": "q", "response_column": "a"}
    cfg = load_config(
        raw={"task": "causal-lm", "data": lm, "train": {"generate_eval": True}, "search": {"metric": "rouge_l"}}
    )
    assert (cfg.metric, cfg.mode) == ("rouge_l", "max")  # selectable like any registry metric
    [(field, message, fix)] = _problems({"task": "causal-lm", "data": lm, "search": {"metric": "exact_match"}})
    assert field == "search.metric" and fix == "set train.generate_eval: true"
    for task, data in (("causal-lm", {"path": "x.csv"}), ("classification", {"path": "x.csv"})):
        [(field, message, fix)] = _problems({"task": task, "data": data, "train": {"generate_eval": True}})
        assert field == "train.generate_eval" and "prompt_column" in fix
