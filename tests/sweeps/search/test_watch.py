"""The storage watch's diagnosis: a healthy sweep directory, one that disappeared, one that cannot be written."""

import json

import pytest

from sweeps.search.watch import raise_if_storage_broke, storage_problem
from zerotune.errors import StorageError


def test_storage_problem(tmp_path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "config.json").write_text(json.dumps({}))
    assert storage_problem(str(sweep)) is None
    assert not (sweep / ".write-test").exists()
    (sweep / ".write-test").mkdir()  # a probe that cannot be written: as a read-only or full disk would refuse it
    assert storage_problem(str(sweep)).startswith("became unwritable")
    (sweep / ".write-test").rmdir()
    (sweep / "config.json").unlink()
    assert storage_problem(str(sweep)) == "disappeared (its config.json is gone)"


def test_broken_storage_is_a_storage_error_naming_the_fix(tmp_path):
    with pytest.raises(StorageError) as err:
        raise_if_storage_broke(str(tmp_path / "gone"), "./results", "demo")
    assert err.value.field == "storage.path" and "run the same command again" in err.value.fix
