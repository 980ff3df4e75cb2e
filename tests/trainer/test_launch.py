"""The TorchTrainer a fit runs on (trainer.launch): the scaling config reaches Ray Train as configured."""

from __future__ import annotations

import pytest

from trainer.config import ScalingConfig
from trainer.launch import build_trainer


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
def test_the_placement_strategy_reaches_ray_train(tmp_path, strategy):
    scaling = ScalingConfig(num_workers=2, cpus_per_worker=0.5, placement_strategy=strategy)
    trainer = build_trainer(fits=[], scaling=scaling, name="fit", storage_path=str(tmp_path))
    ray_scaling = trainer.scaling_config
    assert ray_scaling.placement_strategy == strategy
    assert (ray_scaling.num_workers, ray_scaling.resources_per_worker) == (2, {"CPU": 0.5})
    assert ray_scaling.as_placement_group_factory().strategy == strategy


def test_pack_is_the_default_and_unknown_strategies_are_refused():
    from pydantic import ValidationError

    assert ScalingConfig().placement_strategy == "PACK"  # Ray Train's default: few nodes, fast all-reduce
    with pytest.raises(ValidationError, match="placement_strategy"):
        ScalingConfig(placement_strategy="spread-out")


def test_one_workers_bundle_is_what_ray_train_is_given_and_what_pre_flight_checks(tmp_path):
    from sweeps.config import load_config
    from sweeps.preflight.checks import worker_bundle as checked
    from trainer.launch import worker_bundle

    cfg = load_config(raw={"name": "s", "data": {"path": "x.csv"}, "scaling": {"use_gpu": True, "cpus_per_worker": 3}})
    trainer = build_trainer(fits=[], scaling=cfg.scaling, name="fit", storage_path=str(tmp_path))
    assert trainer.scaling_config.resources_per_worker == worker_bundle(cfg.scaling) == {"CPU": 3.0, "GPU": 1.0}
    assert checked(cfg) == worker_bundle(cfg.scaling)
