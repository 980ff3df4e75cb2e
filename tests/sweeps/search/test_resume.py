"""sweeps/search/resume.py: a resumed sweep runs the configuration it started with; only the allowed fields may
change, and every refused change is named with its saved and new value."""

import pytest

from sweeps.config import load_config
from sweeps.search.resume import Change, resume_changes, with_changes
from zerotune.errors import ConfigError

CONFIG_JSON = "/store/s/config.json"


def _raw(**over) -> dict:
    raw = {
        "name": "s",
        "data": {"path": "rows.csv", "label_column": "label"},
        "model": {"path": "tiny", "max_length": 32},
        "train": {"epochs": 2},
        "scaling": {"num_workers": 2},
        "folds": {"k": 3},
        "search": {
            "num_trials": 4,
            "space": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True}, "batch_size": [8, 16]},
        },
        "storage": {"path": "./results"},
    }
    for dotted, value in over.items():
        *parents, leaf = dotted.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def _saved(**over) -> dict:
    """config.json as `sweep run` writes it when the sweep starts."""
    return load_config(raw=_raw(**over)).model_dump(mode="json")


def _changes(saved: dict, **over):
    return resume_changes(saved, load_config(raw=_raw(**over)), config_path=CONFIG_JSON)


def test_every_changed_field_is_named_with_its_saved_and_new_value():
    with pytest.raises(ConfigError) as caught:
        _changes(
            _saved(),
            search__space={"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "batch_size": [8, 16]},
            model__max_length=64,
            data__text_pair_column="other",
            train__epochs=3,
            search__num_trials=6,  # allowed: not among the problems
        )
    problems = {field: (why, fix) for field, why, fix in caught.value.problems}
    assert set(problems) == {
        "search.space.learning_rate.high",
        "model.max_length",
        "data.text_pair_column",
        "train.epochs",
    }
    why, fix = problems["search.space.learning_rate.high"]
    assert "0.001 -> 0.01" in why
    assert CONFIG_JSON in fix and "new sweep name" in fix and "0.001" in fix
    assert "32 -> 64" in problems["model.max_length"][0] and "None -> 'other'" in problems["data.text_pair_column"][0]
    assert caught.value.exit_code == 2


def test_worker_counts_are_refused_because_they_change_the_global_batch():
    with pytest.raises(ConfigError) as caught:
        _changes(_saved(), scaling__num_workers=1)
    [(field, why, _)] = caught.value.problems
    assert field == "scaling.num_workers" and "2 -> 1" in why and "global batch" in why


def test_the_allowed_changes_pass_and_are_returned_in_field_order():
    saved = _saved(search__max_concurrent_trials=1)
    changes = _changes(
        saved,
        search__num_trials=6,
        search__max_concurrent_trials=None,  # either way
        storage__checkpoint_every_epoch=False,
        storage__lease_timeout_s=600.0,
        # Where the sweep and its data live, not what runs: a copy or a new mount resumes the same sweep.
        storage__path="/mnt/results",
        data__path="/mnt/data/rows.csv",
    )
    assert changes == [
        Change("search.max_concurrent_trials", 1, None),
        Change("search.num_trials", 4, 6),
        Change("storage.checkpoint_every_epoch", True, False),
        Change("storage.lease_timeout_s", 300.0, 600.0),
    ]
    updated = with_changes(saved, changes)
    assert updated["search"]["num_trials"] == 6 and updated["storage"]["checkpoint_every_epoch"] is False
    assert updated["storage"]["path"] == "./results"  # only the applied changes: the saved location stays
    assert saved["search"]["num_trials"] == 4  # the saved tree itself is untouched
    assert (
        _changes(
            updated,
            search__num_trials=6,
            storage__checkpoint_every_epoch=False,
            storage__lease_timeout_s=600.0,
            search__max_concurrent_trials=None,
        )
        == []
    )


def test_the_trial_count_can_only_be_raised():
    with pytest.raises(ConfigError) as caught:
        _changes(_saved(), search__num_trials=3)
    [(field, why, fix)] = caught.value.problems
    assert field == "search.num_trials" and "4 -> 3" in why and "at least 4" in fix


def test_a_default_written_out_is_the_same_configuration():
    # The effective configuration is compared: f1_macro is what an unset metric means for classification.
    assert _changes(_saved(), search__metric="f1_macro", search__mode="max", deepspeed__zero_stage=2) == []


def test_a_saved_config_this_version_cannot_read_is_refused_naming_the_file():
    saved = _saved()
    saved["train"]["retired_option"] = 1
    with pytest.raises(ConfigError) as caught:
        _changes(saved)
    [(field, why, _)] = caught.value.problems
    assert field == f"{CONFIG_JSON}: train.retired_option" and why == "unknown key"
