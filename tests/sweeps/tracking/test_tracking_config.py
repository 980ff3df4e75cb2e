"""The `tracking:` group: its defaults, the checks that refuse what cannot work, and resuming with it changed."""

from __future__ import annotations

import pytest

from sweeps.config import load_config
from sweeps.tracking.settings import installed
from zerotune.errors import ConfigError

BASE = {"name": "t", "data": {"path": "/tmp/data.csv"}}


def _load(tracking: dict):
    return load_config(raw={**BASE, "tracking": tracking})


def _fields(exc: ConfigError) -> dict[str, tuple[str, str]]:
    return {field: (why, fix) for field, why, fix in exc.problems}


def test_off_by_default_and_on_per_backend():
    assert not load_config(raw=BASE).tracking.enabled
    cfg = _load({"mlflow": {"uri": "http://127.0.0.1:5000"}, "tensorboard": True})
    assert cfg.tracking.enabled and cfg.tracking.mlflow.experiment is None and not cfg.tracking.wandb.project


def test_unknown_keys_and_relative_stores_are_refused_naming_the_field():
    with pytest.raises(ConfigError) as bad:
        _load({"mlflow": {"url": "http://x"}})
    assert _fields(bad.value)["tracking.mlflow.url"] == ("unknown key", "did you mean 'uri'?")
    with pytest.raises(ConfigError) as relative:
        _load({"mlflow": {"uri": "sqlite:///mlflow.db"}})
    why, fix = _fields(relative.value)["tracking.mlflow.uri"]
    assert "absolute path" in why and "sqlite:////abs/mlflow.db" in fix
    assert _load({"mlflow": {"uri": "sqlite:////tmp/mlflow.db"}}).tracking.mlflow.uri == "sqlite:////tmp/mlflow.db"


def test_credentials_in_the_mlflow_uri_are_refused_without_repeating_them():
    with pytest.raises(ConfigError) as bad:
        _load({"mlflow": {"uri": "https://me:s3cret@mlflow.example.com"}})
    why, fix = _fields(bad.value)["tracking.mlflow.uri"]
    assert "credentials" in why and "MLFLOW_TRACKING_PASSWORD" in fix
    assert "s3cret" not in str(bad.value)


def test_a_backend_whose_package_is_missing_is_refused_with_the_install_that_fixes_it():
    if installed("wandb"):
        pytest.skip("wandb is installed here: nothing to refuse")
    with pytest.raises(ConfigError) as bad:
        _load({"wandb": {"project": "sweeps"}})
    why, fix = _fields(bad.value)["tracking.wandb.project"]
    assert "wandb" in why and fix == "pip install wandb"


def test_a_resumed_sweep_may_turn_tracking_on_or_point_it_elsewhere():
    from sweeps.search.resume import resume_changes, with_changes

    saved = load_config(raw=BASE).model_dump(mode="json")
    saved.pop("tracking")  # a sweep started before the group existed
    cfg = _load({"mlflow": {"uri": "http://127.0.0.1:5000"}, "tensorboard": True})
    changes = resume_changes(saved, cfg, config_path="config.json")
    assert {c.field for c in changes} == {"tracking.mlflow.uri", "tracking.tensorboard"}
    assert load_config(raw=with_changes(saved, changes)).tracking == cfg.tracking
    with pytest.raises(ConfigError):  # the rest of the config is still held to what the sweep started with
        resume_changes(saved, load_config(raw={**BASE, "seed": 1}), config_path="config.json")
