"""trainer.storage and its readers on a real S3-protocol server (moto's, tests/s3_server.py): what a torn or
interrupted upload leaves is never read as a whole record or checkpoint, an unreachable store is a StorageError
from every call (never a bare OSError), and data and model directories are read from object storage.

S3 has no atomic rename (pyarrow's move is copy + delete) and publishes what a closed stream holds, so an
interrupted write can leave a partial object under a temporary name, and a worker killed while Ray Train uploads
a checkpoint leaves a directory without some of its files. The readers must tell these from complete ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import tempfile
import time
from pathlib import Path

import pytest

from trainer.checkpoint import ENGINE_TAG, MANIFEST, STATE, Saved, restore, write_manifest
from trainer.records import FitRecords, FoldRecord
from trainer.storage import exists, list_dir, local_copy, read_json, write_json
from zerotune.errors import StorageError

FOLD0 = FoldRecord(fold=0, epochs_run=1, best_epoch=0, metrics={"f1_macro": 0.5}, history=[{"epoch": 0}], val_sha="a")


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The session's server, with this test's environment pointing pyarrow at it."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


def _put(s3, uri: str, data: bytes) -> None:
    """Write an object as it is, bypassing trainer.storage (a torn upload, as another writer left it)."""
    fs = s3.filesystem()
    with fs.open_output_stream(uri.removeprefix("s3://")) as out:
        out.write(data)


def test_a_write_leaves_the_whole_object_and_no_temporary_one(s3):
    records = s3.uri("records")
    write_json(records + "/fold-0.json", FOLD0.to_json())
    write_json(records + "/fold-0.json", {**FOLD0.to_json(), "best_epoch": 0})  # replaced whole
    assert list_dir(records) == ["fold-0.json"] and exists(records + "/fold-0.json")
    assert read_json(records + "/fold-0.json")["best_epoch"] == 0


def test_a_torn_record_is_a_storage_error_naming_it_and_a_partial_temporary_object_is_no_record(s3):
    """A record truncated at its own key (another tool's torn upload) is unreadable, naming the object; a partial
    object under a write's temporary name (a writer interrupted before its copy to the real key) is not listed."""
    from trainer.checkpoint import ResumeState, past_recorded_folds
    from trainer.records import rows_sha

    records = FitRecords(s3.uri("records"))
    whole = dataclasses.replace(FOLD0, val_sha=rows_sha([0, 1]))
    records.write_fold(whole)
    text = json.dumps(dataclasses.replace(whole, fold=1).to_json())
    _put(s3, records.uri + "/fold-1.json.tmp-4242", text[: len(text) // 2].encode())
    assert records.folds() == [whole]  # the temporary object is not a fold record

    _put(s3, records.uri + "/fold-1.json", text[: len(text) // 2].encode())
    with pytest.raises(StorageError) as err:
        records.folds()
    assert records.uri + "/fold-1.json" in err.value.message and "damaged" in err.value.fix
    # A restarted worker group does not take the torn record for a finished fold: it resumes from its checkpoint.
    resume = ResumeState(folds=(whole,), fold=1, epoch=0)
    assert past_recorded_folds(resume, records, [[0, 1], [2, 3]], exported=False) == resume


def _upload_checkpoint(s3, run: str, name: str, saved: Saved) -> str:
    """A checkpoint as Ray Train uploads it from a rank's directory: engine files, their manifest, state.json."""
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ENGINE_TAG).mkdir()
        (Path(tmp) / ENGINE_TAG / "mp_rank_00_model_states.pt").write_bytes(b"\1" * 4096)
        write_manifest(tmp, rank=0)
        (Path(tmp) / STATE).write_text(json.dumps(saved.to_json()))
        target = posixpath.join(run.removeprefix("s3://"), name)
        pafs.copy_files(tmp, target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3.filesystem())
    return target


@pytest.mark.parametrize("how", ["manifest missing", "engine file missing", "engine file truncated", "state torn"])
def test_a_partly_uploaded_checkpoint_is_passed_over_for_the_one_before(s3, how):
    from ray.train import Checkpoint

    run, fs = s3.uri("fit"), s3.filesystem()
    saved = Saved(fit=0, fold=1, epoch=0, engine_saved=True, folds=(FOLD0,), history=({"epoch": 0},), resumes=0)
    saved = dataclasses.replace(saved, ranks=1)
    older = _upload_checkpoint(s3, run, "checkpoint_1000_f01_e000", saved)
    latest = _upload_checkpoint(s3, run, "checkpoint_2000_f01_e001", dataclasses.replace(saved, epoch=1))
    assert restore(Checkpoint(path=latest, filesystem=fs)).epoch == 1  # whole: the latest is used
    engine_file = posixpath.join(latest, ENGINE_TAG, "mp_rank_00_model_states.pt")
    if how == "manifest missing":
        fs.delete_file(posixpath.join(latest, MANIFEST.format(rank=0)))
    elif how == "engine file missing":
        fs.delete_file(engine_file)
    elif how == "engine file truncated":
        _put(s3, "s3://" + engine_file, b"\1" * 100)
    else:
        _put(s3, "s3://" + posixpath.join(latest, STATE), b'{"fold": 1, "epo')
    state = restore(Checkpoint(path=latest, filesystem=fs))
    assert (state.fold, state.epoch) == (1, 0) and state.checkpoint.path == older


def test_an_unreachable_store_is_a_storage_error_from_every_call(s3, monkeypatch):
    """What the storage watch and the lease rely on to stop a sweep cleanly (exit 3) when the store goes away.
    AWS_MAX_ATTEMPTS, the SDKs' standard variable, is honoured: pyarrow's own default spends ~6 s per call."""
    records = s3.uri("records")
    write_json(records + "/fold-0.json", FOLD0.to_json())
    s3.stop()
    try:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        calls = {
            "exists": lambda: exists(records + "/fold-0.json"),
            "list_dir": lambda: list_dir(records),
            "read_json": lambda: read_json(records + "/fold-0.json"),
            "write_json": lambda: write_json(records + "/fold-1.json", FOLD0.to_json()),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StorageError) as err:
                call()
            assert records in err.value.message and err.value.exit_code == 3, name
            assert time.monotonic() - started < 3, name  # 2 quick attempts, not pyarrow's ~6 s default
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "two")
        with pytest.raises(StorageError) as err:
            exists(records + "/fold-0.json")
        assert err.value.field == "AWS_MAX_ATTEMPTS" and "'two'" in err.value.message
    finally:
        s3.start()
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")
    assert read_json(records + "/fold-0.json") == FOLD0.to_json()  # the outage lost nothing


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_data_is_read_from_object_storage(s3, suffix, tmp_path):
    import pandas as pd

    from trainer.config import DataConfig
    from trainer.tables import read_table

    df = pd.DataFrame({"text": ["a b", "NA", "c"], "label": ["x", "y", "x"]})
    local = tmp_path / f"rows{suffix}"
    {
        ".csv": lambda: df.to_csv(local, index=False),
        ".jsonl": lambda: df.to_json(local, orient="records", lines=True),
    }.get(suffix, lambda: df.to_parquet(local))()
    uri = s3.uri(f"rows{suffix}")
    _put(s3, uri, local.read_bytes())
    read = read_table(DataConfig(path=uri, label_column="label"))
    pd.testing.assert_frame_equal(read.reset_index(drop=True), df)


def test_reading_data_that_is_not_there_or_damaged_names_the_uri(s3):
    from trainer.config import DataConfig
    from trainer.tables import read_table
    from zerotune.errors import DataError

    missing = s3.uri("none.csv")
    with pytest.raises(StorageError) as err:
        read_table(DataConfig(path=missing, label_column="label"))
    assert err.value.field == "data.path" and f"{missing} does not exist" in err.value.message
    empty = s3.uri("empty.csv")
    _put(s3, empty, b"")
    with pytest.raises(DataError) as err:
        read_table(DataConfig(path=empty, label_column="label"))
    assert err.value.message == f"{empty} is empty"  # the URI, not the local copy's path


def test_a_directory_on_object_storage_is_copied_whole_and_the_copy_removed(s3, tmp_path):
    model = s3.uri("model")  # as an export uploads it: keys under a prefix, no directory marker objects
    _put(s3, model + "/config.json", b'{"a": 1}')
    _put(s3, model + "/tokenizer/vocab.json", b'{"b": 2}')
    with local_copy(model, field="MODEL_DIR") as local:
        assert os.path.basename(local) == "model"
        files = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
        assert files == ["config.json", "tokenizer/vocab.json"]
        assert json.loads(Path(local, "tokenizer", "vocab.json").read_text()) == {"b": 2}
    assert not os.path.exists(local)
    with local_copy(str(tmp_path), field="MODEL_DIR") as same:  # a local path is used in place
        assert same == str(tmp_path)


@pytest.fixture(scope="module")
def private_s3():
    from s3_server import start_authenticating_s3

    server = start_authenticating_s3()
    yield server
    server.stop()


def test_credentials_come_from_the_environment_or_the_sdk_credentials_file_and_errors_never_show_them(
    private_s3, monkeypatch, tmp_path
):
    """On a server that checks signatures: the storage URI carries no credentials; the environment's key is used,
    or, without one, the SDK's usual chain (here its shared credentials file). A wrong secret is refused, and the
    error names neither secret."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", private_s3.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = f"s3://{private_s3.bucket}/sweep/config.json"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", private_s3.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + private_s3.secret)
    with pytest.raises(StorageError) as err:
        write_json(uri, {"name": "s"})
    assert private_s3.secret not in str(err.value.message) + str(err.value.fix)
    assert "ACCESS_DENIED" in err.value.message, err.value.message

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", private_s3.secret)
    write_json(uri, {"name": "s"})

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = {private_s3.key_id}\naws_secret_access_key = {private_s3.secret}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    assert read_json(uri) == {"name": "s"}
