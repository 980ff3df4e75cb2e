"""Read and write small files under a local path or a URI (file://, s3://, gs://) through pyarrow."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
from pathlib import Path

from zerotune.errors import StorageError


def local_path(uri: str) -> str | None:
    """The local path a plain path or a file:// URI names; None for an object store or any other remote URI."""
    if "://" not in uri or uri.startswith("file://"):
        return uri.removeprefix("file://")
    return None


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it); local paths are made absolute."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError with the reason
        raise StorageError(
            f"cannot open storage {uri}: {exc}",
            field="storage.path",
            fix="use a local directory or an s3://, gs:// or file:// URI with credentials",
        ) from None
    if isinstance(fs, pafs.S3FileSystem) and os.environ.get(MAX_ATTEMPTS):
        fs = _with_max_attempts(fs, os.environ[MAX_ATTEMPTS])
    return fs, path


# The AWS SDKs' standard variable for how often a request is tried; pyarrow's from_uri ignores it (its default
# retries spend ~6 s on a store that refuses connections), so it is applied here for the calls zerotune makes.
MAX_ATTEMPTS = "AWS_MAX_ATTEMPTS"


def _with_max_attempts(fs, value: str):
    import pyarrow.fs as pafs

    try:
        attempts = int(value)
        if attempts < 1:
            raise ValueError
    except ValueError:
        raise StorageError(
            f"{MAX_ATTEMPTS}={value!r} is not a whole number of attempts",
            field=MAX_ATTEMPTS,
            fix=f"set {MAX_ATTEMPTS} to 1 or more (each S3 request is tried that many times), or unset it",
        ) from None
    options = fs.__reduce__()[1][0]  # every option from_uri set (endpoint, region, credentials source), as pickled
    return pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts))


def join(uri: str, *parts: str) -> str:
    if "://" in uri:
        return uri.rstrip("/") + "/" + "/".join(parts)
    return os.path.join(uri, *parts)


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically where the filesystem allows: a reader never sees half a file.

    On a local disk the file and its directory are also fsynced before and after the rename, so a power loss
    leaves the old record or the new one, never an empty file under the new name. Object stores publish a whole
    object or nothing (and pyarrow has no fsync for them)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            _write_local(path, tmp, data)
            return
        fs.create_dir(posixpath.dirname(path), recursive=True)
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except OSError as exc:
        raise StorageError(
            f"cannot write {uri}: {exc}",
            field="storage.path",
            fix="check that the storage path exists, is writable and has space",
        ) from None


def _write_local(path: str, tmp: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fd = os.open(directory, os.O_RDONLY)  # the rename is durable once the directory entry is
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(uri: str, obj) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, default=_json_default, allow_nan=True).encode())


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as src:
            return src.read()
    except (OSError, FileNotFoundError) as exc:
        raise StorageError(
            f"cannot read {uri}: {exc}", field="storage.path", fix="check the sweep name and storage path"
        ) from None


def read_json(uri: str):
    """The JSON document at `uri`; StorageError naming the file when it is missing or not whole JSON (truncated)."""
    data = read_bytes(uri)
    try:
        return json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise StorageError(
            f"cannot parse {uri}: {exc}",
            field="storage.path",
            fix="the file is damaged (an interrupted write or a disk fault): restore it from a copy, or delete it",
        ) from None


def exists(uri: str) -> bool:
    """StorageError when the storage cannot say (unreachable, access denied), as for every read here."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise _unreachable(uri, exc) from None


def list_dir(uri: str) -> list[str]:
    """Names directly under a directory (empty if it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return []
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    except OSError as exc:
        raise _unreachable(uri, exc) from None
    return sorted(posixpath.basename(i.path) for i in infos)


def _unreachable(uri: str, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot read {uri}: {exc}",
        field="storage.path",
        fix="check that the storage is reachable from this machine and the credentials allow reading it",
    )


@contextlib.contextmanager
def local_copy(uri: str, *, field: str):
    """A local path holding what `uri` holds (a file or a directory tree), for readers that take only local paths
    (pandas' CSV header check, transformers' from_pretrained). A local path is yielded as it is; anything else is
    downloaded into a temporary directory, under its own name, and deleted when the block ends."""
    import tempfile

    import pyarrow.fs as pafs

    if (local := local_path(uri)) is not None:
        yield local
        return
    fs, path = filesystem(uri)
    try:
        kind = fs.get_file_info(path).type
    except OSError as exc:
        raise StorageError(f"cannot read {uri}: {exc}", field=field, fix="check the URI and the credentials") from None
    if kind == pafs.FileType.NotFound:
        raise StorageError(f"{uri} does not exist", field=field, fix="check the URI (bucket, prefix and name)")
    with tempfile.TemporaryDirectory(prefix="zt-copy-") as tmp:
        local = os.path.join(tmp, posixpath.basename(path.rstrip("/")))
        try:
            _download(fs, path, local, is_dir=kind == pafs.FileType.Directory)
        except OSError as exc:
            raise StorageError(
                f"cannot read {uri}: {exc}", field=field, fix="check the URI and the credentials"
            ) from None
        yield local


def _download(fs, path: str, local: str, *, is_dir: bool) -> None:
    """File by file: an object store has no directory objects to copy (an uploaded model directory is only keys
    under a prefix), so each file's local parent directories are made here."""
    import pyarrow.fs as pafs

    if is_dir:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = [
            (i.path, os.path.join(local, posixpath.relpath(i.path, path)))
            for i in infos
            if i.type == pafs.FileType.File
        ]
    else:
        files = [(path, local)]
    for source, target in files:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with fs.open_input_stream(source) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 24):
                out.write(chunk)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
