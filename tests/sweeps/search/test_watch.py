"""The storage watch's diagnosis: a healthy sweep directory, one that disappeared, one that cannot be written."""

import json
from pathlib import Path

import pytest

from sweeps.layout import probe_path
from sweeps.search.watch import raise_if_storage_broke, storage_problem
from zerotune.errors import StorageError


def test_storage_problem(tmp_path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "config.json").write_text(json.dumps({}))
    assert storage_problem(str(sweep)) is None
    probe = Path(probe_path(str(sweep)))  # this process's probe (each writer has its own)
    assert not probe.exists()
    probe.mkdir()  # a probe that cannot be written: as a read-only or full disk would refuse it
    assert storage_problem(str(sweep)).startswith("became unwritable")
    probe.rmdir()
    (sweep / "config.json").unlink()
    assert storage_problem(str(sweep)) == "disappeared (its config.json is gone)"


def test_broken_storage_is_a_storage_error_naming_the_fix(tmp_path):
    with pytest.raises(StorageError) as err:
        raise_if_storage_broke(str(tmp_path / "gone"), "./results", "demo")
    assert err.value.field == "storage.path" and "run the same command again" in err.value.fix


def test_a_run_whose_lease_was_taken_over_stops(tmp_path):
    """Another runner that judged this one stale deletes its claim: the watch then stops this run (it would
    otherwise keep writing beside the new holder)."""
    import time

    from sweeps import lease

    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "config.json").write_text(json.dumps({}))
    held = lease.take(str(sweep), timeout_s=60, heartbeat_s=0.1, settle_s=0.0)
    try:
        assert storage_problem(str(sweep), held) is None
        import pickle

        from sweeps.search.watch import StorageWatch

        assert pickle.loads(pickle.dumps(StorageWatch(str(sweep), lease=held))).lease is None  # Tune pickles it
        Path(held.path).unlink()  # what a takeover does to the stale holder's claim
        deadline = time.monotonic() + 5
        while not held.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storage_problem(str(sweep), held).startswith("was taken over by another run")
        with pytest.raises(StorageError, match="taken over"):
            raise_if_storage_broke(str(sweep), "./results", "demo", held)
    finally:
        held.release()
