"""sweeps/preflight: one pre-flight for `sweep run` and `sweep validate`;
the cluster is asked only once the data passed."""

import pytest

from sweeps.config import load_config
from sweeps.preflight.checks import count_parameters, max_concurrent, trials_the_ceiling_fits
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


def test_the_data_fingerprint_covers_the_columns_a_fold_or_fit_reads():
    # A resumed sweep (and a refit) refuses other data by this fingerprint: texts and labels alone would let a
    # changed sentence pair, response or group column through (the groups decide the folds).
    import numpy as np

    from sweeps.preflight.data import fingerprint
    from trainer.data import Examples

    base = dict(texts=["a b", "c d"], labels=np.array([0, 1]))
    plain = fingerprint(Examples(**base))
    assert plain == "a0b49705115db313"  # unchanged for data without those columns: existing sweeps still resume
    variants = [
        Examples(**base, pairs=["x", "y"]),
        Examples(**base, pairs=["x", "z"]),
        Examples(**base, responses=["x", "y"]),
        Examples(**base, groups=np.array(["g1", "g2"])),
        Examples(**base, groups=np.array(["g1", "g1"])),
    ]
    assert len({plain, *map(fingerprint, variants)}) == 1 + len(variants)


def test_validate_writes_nothing_even_under_a_storage_path_that_does_not_exist_yet(
    tmp_path, tiny_bert_dir, keyword_csv
):
    """The storage probe creates the directories above it; validate removes the ones it created."""
    from sweeps.preflight.validate import validate

    cfg = _cfg(tmp_path / "new" / "results", tiny_bert_dir, keyword_csv, scaling={"num_workers": 1})
    report = validate(cfg)
    assert report["ok"] and any(c.startswith("model: tokenizer and config") for c in report["checks"])
    assert list(tmp_path.iterdir()) == []


def _write(tmp_path, raw) -> str:
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


REFUSED = {
    "max_length beyond positions": ({"model": {"max_length": 256}}, "model.max_length"),
    "unknown lora target": (
        {"model": {"method": "lora", "lora": {"target_modules": ["q_proj"]}}},
        "model.lora.target_modules",
    ),
    "seed beyond 32 bits": ({"seed": 2**32}, "seed"),
    "infinite learning rate": ({"train": {"learning_rate": float("inf")}}, "train.learning_rate"),
    "label column is the text": ({"data": {"label_column": "text"}}, "data.label_column"),
    "grace beyond folds": (
        {"search": {"space": {"batch_size": [4]}, "scheduler": {"grace_folds": 4}}},
        "search.scheduler.grace_folds",
    ),
    "sgd with optimizer offload": (
        {"train": {"optimizer": "sgd"}, "deepspeed": {"zero_stage": 1, "offload_optimizer": True}},
        "train.optimizer",
    ),
    "test split under the classes": ({"folds": {"k": 3, "test_fraction": 0.005}}, "folds.test_fraction"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sweep_validate_refuses_with_exit_2_the_field_and_the_fix_and_writes_nothing(
    tmp_path, capsys, tiny_bert_dir, keyword_csv, case
):
    from sweeps.cli import main

    over, field = REFUSED[case]
    raw = _cfg(tmp_path / "results", tiny_bert_dir, keyword_csv, scaling={"num_workers": 1}).model_dump(mode="json")
    for group, values in over.items():
        raw[group] = {**raw[group], **values} if isinstance(values, dict) else values
    code = main(["sweep", "validate", _write(tmp_path, raw)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {field}") and "\n  fix: " in err, err
    assert not (tmp_path / "results").exists()


def _autoscaling(max_workers=4, cpus=1):
    from cluster.capacity import from_autoscaling_config

    return from_autoscaling_config(
        {
            "head_node_type": "head",
            "available_node_types": {
                "head": {"resources": {"CPU": 0}, "max_workers": 0},
                "cpu": {"resources": {"CPU": cpus}, "min_workers": 0, "max_workers": max_workers},
            },
        }
    )


def test_a_worker_group_that_fits_nodes_the_autoscaler_can_start_is_accepted(tmp_path, tiny_bert_dir, keyword_csv):
    # No worker node is up (the live cluster has 0 CPUs), but the autoscaler can start 4 one-CPU nodes.
    cfg = _cfg(tmp_path, tiny_bert_dir, keyword_csv)  # 2 workers x 1 CPU
    ok = preflight(cfg, resources=_autoscaling)
    assert ok.checks[-1].startswith("cluster ceiling (autoscaler): 4 x cpu (CPU 1)"), ok.checks[-1]
    assert max_concurrent(cfg, ok.resources) == 2  # 4 nodes / 2 workers per trial, not the 1 live CPUs would give
    with pytest.raises(ConfigError) as err:  # a worker larger than any node the cluster can have
        preflight(
            _cfg(tmp_path, tiny_bert_dir, keyword_csv, scaling={"num_workers": 1, "cpus_per_worker": 2}),
            resources=_autoscaling,
        )
    assert [p[0] for p in err.value.problems] == ["scaling.cpus_per_worker"] and "largest node has 1" in str(err.value)
    with pytest.raises(ConfigError) as err:  # more workers than the ceiling's nodes
        preflight(_cfg(tmp_path, tiny_bert_dir, keyword_csv), resources=lambda: _autoscaling(max_workers=1))
    assert [p[0] for p in err.value.problems] == ["scaling.num_workers"] and "num_workers <= 1" in str(err.value)


def _unbounded():
    from cluster.capacity import Capacity, NodeType

    head = NodeType("head", {"CPU": 2.0, "memory": 4e9}, 1)  # KubeRay's head, no worker up (minReplicas 0)
    return Capacity(node_types=(head,), source="live", autoscaling=True, unbounded=True, up={"CPU": 2.0})


def test_an_autoscaler_whose_node_types_cannot_be_read_is_not_refused_but_named(tmp_path, tiny_bert_dir, keyword_csv):
    # A GPU sweep on the project's own KubeRay: no live node has a GPU, the autoscaler can start some.
    cfg = _cfg(tmp_path, tiny_bert_dir, keyword_csv, scaling={"num_workers": 2, "use_gpu": True})
    ok = preflight(cfg, resources=_unbounded)
    assert "an autoscaler runs but its node types cannot be read" in ok.checks[-1], ok.checks[-1]
    # Every trial left may run: the autoscaler starts what it can, Tune places trials as nodes arrive.
    assert max_concurrent(cfg, ok.resources) == cfg.search.num_trials == 8
    assert max_concurrent(cfg, ok.resources, done=6) == 2  # a resumed sweep with 6 trials finished


def test_concurrency_never_exceeds_the_trials_left_and_asks_no_more_than_the_ceiling_fits(
    tmp_path, tiny_bert_dir, keyword_csv
):
    search = {"space": {"batch_size": [4]}, "num_trials": 3, "max_concurrent_trials": 10}
    cfg = _cfg(tmp_path, tiny_bert_dir, keyword_csv, search=search)  # 2 workers x 1 CPU per trial
    assert max_concurrent(cfg, {"CPU": 64.0}) == 3  # not 10: only 3 trials
    assert max_concurrent(cfg, {"CPU": 64.0}, done=2) == 1  # a resumed sweep with 2 of them finished
    # The user's number stands on a smaller cluster (nodes added by hand later are used; the rest wait) ...
    assert max_concurrent(cfg, {"CPU": 4.0}) == 3
    # ... but the autoscaler is asked only for what its ceiling holds.
    assert trials_the_ceiling_fits(cfg, {"CPU": 4.0}, limit=3) == 2
    assert trials_the_ceiling_fits(cfg, _autoscaling(max_workers=2), limit=3) == 1
    unset = _cfg(tmp_path, tiny_bert_dir, keyword_csv, search={**search, "max_concurrent_trials": None})
    assert max_concurrent(unset, {"CPU": 4.0}) == 2  # unset: what the ceiling fits


def _offload(tmp_path, tiny_bert_dir, keyword_csv):
    ds = {"zero_stage": 2, "offload_optimizer": True}
    return _cfg(tmp_path, tiny_bert_dir, keyword_csv, deepspeed=ds, scaling={"num_workers": 1})


def test_offload_memory_is_checked_against_the_largest_node_not_the_sum(tmp_path, tiny_bert_dir, keyword_csv):
    from cluster.capacity import Capacity, NodeType
    from sweeps.preflight.checks import OFFLOAD_BYTES

    cfg = _offload(tmp_path, tiny_bert_dir, keyword_csv)
    need = count_parameters(cfg) * OFFLOAD_BYTES["optimizer"]
    # 1000 nodes (an unlimited autoscaler type), each with half of what one worker offloads.
    many = Capacity(node_types=(NodeType("cpu", {"CPU": 4.0, "memory": need / 2}, 1000),), source="autoscaler")
    with pytest.raises(ConfigError) as err:
        preflight(cfg, resources=lambda: many)
    assert [p[0] for p in err.value.problems] == ["deepspeed.offload_optimizer"]
    assert "the largest node has" in str(err.value)
    big = Capacity(node_types=(NodeType("cpu", {"CPU": 4.0, "memory": need * 2}, 1),), source="autoscaler")
    preflight(cfg, resources=lambda: big)


def test_offload_memory_is_not_checked_against_the_drivers_ram_when_node_memory_is_unknown(
    tmp_path, tiny_bert_dir, keyword_csv, caplog
):
    cfg = _offload(tmp_path, tiny_bert_dir, keyword_csv)
    with caplog.at_level("WARNING", logger="sweeps.preflight.checks"):
        preflight(cfg, resources=lambda: _autoscaling())  # node types without memory: unknown, not this machine's
    assert "host memory for ZeRO offload not checked" in caplog.text
