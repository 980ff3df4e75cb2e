"""Every shipped example loads, validates against its data, and names its launch command."""

import pytest

from conftest import REPO
from sweeps.config import load_config
from sweeps.preflight.data import prepare_sweep

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_there_are_examples_for_every_task():
    tasks = {load_config(p).task for p in EXAMPLES}
    assert tasks == {"classification", "regression", "causal-lm"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path, monkeypatch):
    monkeypatch.chdir(REPO)  # data paths are relative to the repo root, as the header comments say
    assert "zerotune sweep run examples/" in path.read_text().split("\n", 6)[1] + path.read_text()[:600]
    cfg = load_config(path)
    examples, folds = prepare_sweep(cfg)
    assert len(folds.folds) == cfg.folds.k and len(examples) > 100
