"""The benchmark rows' arithmetic: ZeRO memory expectations, pruning savings, trial overhead from records."""

import pytest

from benchmarks.scaling import expected_model_state_mb
from benchmarks.sweep_costs import pruning, trial_overhead


def test_zero_expectations_shrink_with_stage_and_world():
    p = 2**20  # one Mi-parameter: MiB per byte-per-parameter
    assert expected_model_state_mb(p, 0, 2) == 16  # DDP: everything replicated
    assert expected_model_state_mb(p, 1, 2) == 4 + 4 + 6
    assert expected_model_state_mb(p, 2, 2) == 4 + 8
    assert expected_model_state_mb(p, 3, 2) == 10
    assert expected_model_state_mb(p, 3, 1) == 20  # one worker: nothing to partition, plus the fp32 copy


def _summary(scheduler, fits, wall, mean, std):
    return {
        "fold_fits": fits,
        "wall_s": wall,
        "states": {},
        "best": {"mean": mean, "std": std, "params": {"learning_rate": 1e-4}},
    }


def test_pruning_goal_needs_both_savings_and_the_same_best():
    met = pruning({"none": _summary("none", 18, 600, 0.30, 0.05), "asha": _summary("asha", 9, 330, 0.28, 0.04)})
    assert met["fold_fits_saved"] == 0.5 and met["goal_met"] and met["wall_ratio_asha_vs_none"] == 0.55
    worse = pruning({"none": _summary("none", 18, 600, 0.30, 0.01), "asha": _summary("asha", 9, 330, 0.20, 0.01)})
    assert not worse["goal_met"]  # saved fits, but lost the best configuration
    few = pruning({"none": _summary("none", 18, 600, 0.30, 0.05), "asha": _summary("asha", 15, 500, 0.30, 0.05)})
    assert few["fold_fits_saved"] == pytest.approx(1 / 6, abs=1e-3) and not few["goal_met"]


def test_trial_overhead_reads_start_markers_and_fold_records(tmp_path):
    from sweeps.layout import Params, SweepDir
    from trainer.records import FoldRecord, StartMarker

    trial = SweepDir(str(tmp_path)).trial("t1")
    trial.write_params(Params(params={}, started=100.0))
    for fold, (t, setup) in enumerate([(112.0, 2.0), (130.0, 1.5)]):
        trial.records.write_start(StartMarker(fold=fold, start_epoch=0, pid=7, time=t, setup_s=setup), ns=fold)
        record = FoldRecord(fold=fold, epochs_run=1, best_epoch=0, metrics={}, history=[{"time": 15.0}], val_sha="x")
        trial.records.write_fold(record)
    summary = {
        "storage": str(tmp_path),
        "tokenize_s": 0.4,
        "orchestration_share": 0.3,
        "trials": [
            {"trial_id": "t1", "state": "completed", "duration_s": 50.0},
            {"trial_id": "t2", "state": "pruned", "duration_s": 9.0},
        ],
    }
    out = trial_overhead(summary)
    (row,) = out["trials"]
    assert row["worker_group_start_s"] == 10.0  # first fold's setup began 10 s after the trial started
    assert row["fold_setup_s"] == [2.0, 1.5] and row["train_eval_s"] == 30.0
    assert row["fixed_share"] == round(13.5 / 50, 3)
    assert out["one_worker_group_per_trial"] and out["tokenize_s_once_per_sweep"] == 0.4
