"""The Python API without a sweep: lazy import, config loading as the README shows it, errors as the CLI's."""

import subprocess
import sys

import pytest
from readme_blocks import python_blocks

import zerotune
from conftest import REPO
from zerotune.errors import ConfigError, StorageError


def test_import_zerotune_loads_nothing_else_until_the_api_is_used():
    probe = (
        "import sys, zerotune\n"
        "heavy = lambda: sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sweeps', 'trainer', 'cluster', 'pandas', 'torch', 'ray', 'pydantic'} or m == 'zerotune.api')\n"
        "assert heavy() == [], heavy()\n"
        "zerotune.load_config\n"
        "assert 'zerotune.api' in sys.modules and 'sweeps.config' not in sys.modules, heavy()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_api_names_are_exported():
    assert set(zerotune.__all__) <= set(dir(zerotune))
    assert zerotune.Sweep.__module__ == "zerotune.api"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zerotune.nope  # noqa: B018


def test_the_readme_config_example_loads_with_its_override(monkeypatch):
    """The README's first block, up to the sweep it would run (tests/zerotune/test_python_api_integration.py runs
    the second against a real sweep)."""
    monkeypatch.chdir(REPO)
    first = python_blocks()[0]
    namespace = {}
    exec("\n".join(line for line in first.splitlines() if "run_sweep" not in line), namespace)
    cfg = namespace["cfg"]
    assert cfg.search.num_trials == 3 and cfg.name == "vader-tweets"
    assert "zt.run_sweep(cfg)" in first


def test_load_config_takes_a_raw_dict_and_reports_problems_as_the_cli_does(tmp_path):
    raw = {"name": "n", "task": "classification", "model": {"path": "m"}, "data": {"path": "imdb"}}
    cfg = zerotune.load_config(raw=raw, overrides=["data.split=test", "folds.k=4"])
    assert (cfg.data.split, cfg.folds.k) == ("test", 4)
    with pytest.raises(ConfigError) as err:
        zerotune.load_config(raw=raw, overrides=["train.learnig_rate=1"])
    assert err.value.problems[0][0] == "train.learnig_rate"
    with pytest.raises(ConfigError, match="not both or neither"):
        zerotune.load_config()


def test_load_sweep_names_what_is_missing(tmp_path):
    with pytest.raises(StorageError) as err:
        zerotune.load_sweep("nope", storage=str(tmp_path))
    assert err.value.field == "sweep" and err.value.fix
