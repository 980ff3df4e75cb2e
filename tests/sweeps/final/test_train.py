"""sweeps/final/train.py: several `zerotune train` configs share one worker group only when they can."""

import pytest

from sweeps.config import load_config
from sweeps.final.train import run_fits
from zerotune.errors import ConfigError


def _cfg(name, **scaling):
    return load_config(raw={"name": name, "data": {"path": "x.csv"}, "scaling": {"num_workers": 2, **scaling}})


def test_configs_that_cannot_share_a_worker_group_are_refused_before_anything_runs():
    with pytest.raises(ConfigError) as err:
        run_fits([_cfg("a"), _cfg("b", num_workers=1), _cfg("a")])
    assert [p[0] for p in err.value.problems] == ["configs[1].scaling", "configs[2].name"]
    with pytest.raises(ConfigError):
        run_fits([])
