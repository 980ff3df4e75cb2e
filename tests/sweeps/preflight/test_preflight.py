"""sweeps/preflight: one pre-flight for `sweep run` and `sweep validate`;
the cluster is asked only once the data passed."""

import pytest

from sweeps.config import load_config
from sweeps.preflight.checks import count_parameters, max_concurrent
from sweeps.preflight.validate import preflight
from zerotune.errors import ConfigError


def _cfg(tmp_path, model_dir, data, **over):
    raw = {
        "name": "p",
        "model": {"path": str(model_dir)},
        "data": {"path": str(data)},
        "folds": {"k": 3},
        "scaling": {"num_workers": 2},
        "search": {"space": {"batch_size": [4, 8]}},
        "storage": {"path": str(tmp_path)},
    }
    return load_config(raw={**raw, **over})


def test_bad_data_fails_before_the_cluster_is_asked(tmp_path, tiny_bert_dir):
    asked = []
    with pytest.raises(ConfigError) as err:
        preflight(_cfg(tmp_path, tiny_bert_dir, tmp_path / "missing.csv"), resources=lambda: asked.append(1) or {})
    assert err.value.problems[0][0] == "data.path" and asked == []


def test_checks_pass_and_resources_are_checked_against_the_workers(tmp_path, tiny_bert_dir, keyword_csv):
    ok = preflight(_cfg(tmp_path, tiny_bert_dir, keyword_csv), resources=lambda: {"CPU": 3.0})
    assert len(ok.folds.folds) == 3 and len(ok.examples) == 240 and ok.checks[0].startswith("config: classification")
    with pytest.raises(ConfigError) as err:
        preflight(_cfg(tmp_path, tiny_bert_dir, keyword_csv), resources=lambda: {"CPU": 1.0})
    assert [p[0] for p in err.value.problems] == ["scaling.num_workers"]


def test_parameter_estimate_matches_the_real_model(tmp_path, tiny_bert_dir, keyword_csv):
    from transformers import AutoModel

    real = sum(p.numel() for p in AutoModel.from_pretrained(tiny_bert_dir).parameters())
    estimate = count_parameters(_cfg(tmp_path, tiny_bert_dir, keyword_csv))
    assert abs(estimate - real) / real < 0.05, (estimate, real)


def test_concurrency_is_what_the_free_resources_fit(tmp_path, tiny_bert_dir, keyword_csv):
    cfg = _cfg(tmp_path, tiny_bert_dir, keyword_csv)  # 2 workers x 1 CPU per trial, 8 trials
    assert max_concurrent(cfg, {"CPU": 7.0}) == 3
    assert max_concurrent(cfg, {"CPU": 1.0}) == 1  # never 0: a trial waits for resources instead
    capped = _cfg(
        tmp_path, tiny_bert_dir, keyword_csv, search={"space": {"batch_size": [4]}, "max_concurrent_trials": 2}
    )
    assert max_concurrent(capped, {"CPU": 64.0}) == 2
