"""trainer/storage.py: atomic writes, reads, listings and errors that name the storage field."""

import os

import pytest

from trainer.storage import exists, join, list_dir, read_json, write_bytes, write_json
from zerotune.errors import StorageError


def test_json_round_trip_creates_directories_and_leaves_no_temporary_file(tmp_path):
    uri = join(str(tmp_path), "a", "b", "record.json")
    write_json(uri, {"x": 1, "nan": float("nan")})
    assert exists(uri) and read_json(uri)["x"] == 1
    assert list_dir(join(str(tmp_path), "a", "b")) == ["record.json"]  # no .tmp-<pid> left behind


def test_a_write_replaces_the_file_whole(tmp_path):
    uri = str(tmp_path / "r.json")
    write_json(uri, {"v": "old" * 1000})
    write_json(uri, {"v": "new"})
    assert read_json(uri) == {"v": "new"}


def test_listing_a_missing_directory_is_empty_and_sorted_otherwise(tmp_path):
    assert list_dir(str(tmp_path / "none")) == []
    for name in ("b", "a", "c"):
        write_bytes(str(tmp_path / "d" / name), b"1")
    assert list_dir(str(tmp_path / "d")) == ["a", "b", "c"]


def test_join_keeps_uris_and_local_paths_apart():
    assert join("s3://bucket/prefix/", "x", "y.json") == "s3://bucket/prefix/x/y.json"
    assert join("/tmp/a", "b") == os.path.join("/tmp/a", "b")


def test_reading_a_missing_file_or_writing_under_a_file_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError) as err:
        read_json(str(tmp_path / "missing.json"))
    assert err.value.field == "storage.path"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError) as err:
        write_json(str(blocker / "sub" / "r.json"), {})
    assert err.value.exit_code == 3 and "writable" in err.value.fix


def _fsyncs(monkeypatch) -> list[str]:
    """Record what each os.fsync call flushed (the real call still runs): 'file' or 'directory'."""
    import stat

    real, kinds = os.fsync, []

    def fsync(fd):
        kinds.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return kinds


def test_a_local_write_is_fsynced_file_then_directory(tmp_path, monkeypatch):
    kinds = _fsyncs(monkeypatch)
    write_json(str(tmp_path / "records" / "fold-0.json"), {"fold": 0})
    assert kinds == ["file", "directory"] and read_json(str(tmp_path / "records" / "fold-0.json")) == {"fold": 0}
    assert os.listdir(tmp_path / "records") == ["fold-0.json"]


def test_object_storage_is_written_without_fsync(monkeypatch):
    """pyarrow's in-memory filesystem (mock://) stands for an object store: whole objects, no fsync to call."""
    kinds = _fsyncs(monkeypatch)
    write_json("mock://bucket/sweep/r.json", {"x": 1})
    assert kinds == []


@pytest.mark.parametrize("content", [b'{"fold": 0, "metr', b"", b"\xff\xfe"], ids=["truncated", "empty", "binary"])
def test_a_damaged_json_file_is_a_storage_error_naming_it(tmp_path, content):
    path = tmp_path / "fold-0.json"
    path.write_bytes(content)
    with pytest.raises(StorageError) as err:
        read_json(str(path))
    assert str(path) in err.value.message and err.value.exit_code == 3 and "damaged" in err.value.fix
