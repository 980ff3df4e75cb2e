"""Where a sweep's Optuna study lives: a standard Optuna RDB study, which `optuna.load_study` and optuna-dashboard
read, named after the sweep.

- `search.study_storage` unset, storage on a local disk: a SQLite file under the sweep (sweeps.layout `study`).
- `search.study_storage` unset, storage on an object store (s3://, gs://) or a network filesystem (NFS, SMB, ...),
  where SQLite cannot work or its locking is unsafe: a SQLite file on the driver's local disk, uploaded to the same
  path under the sweep after each trial ends (and when the run ends), and downloaded first when the sweep resumes.
- `search.study_storage` set: that SQLAlchemy URL as it is (postgresql://HOST/DB, sqlite:////abs/path: a SQLite
  path must be absolute, as a job's working directory is temporary). Its password is refused (sweeps.config): the
  URL lands in config.json and job entrypoints, so the database driver takes it from the driver's environment
  (PGPASSWORD, ~/.pgpass, a MySQL option file).
- Downloaded on resume unless the driver's local file is the stored copy plus what a failed upload missed.

One study belongs to one sweep: it carries the sweep's URI as a user attribute, and a study of the same name that
another sweep made is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

from sweeps.layout import SweepDir, sweep_uri
from trainer.storage import exists, local_path, read_bytes, write_bytes
from zerotune.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

FIELD = "search.study_storage"
SWEEP_ATTR = "sweep"  # the study's user attribute naming the sweep it belongs to
# Filesystem types (as /proc/self/mounts names them) on which SQLite's file locking is unreliable.
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "afs", "fuse.sshfs", "fuse.s3fs"}
    | {"fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "fuse.goofys", "fuse.mountpoint-s3"}
)
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StudyStore:
    """How to open one sweep's study (strings only: the searcher that holds it is pickled by Tune)."""

    url: str  # the SQLAlchemy URL the searcher opens
    name: str  # the study's name: the sweep's
    sweep: str  # the sweep's URI
    upload_to: str | None = None  # where the driver's local SQLite file is copied (object store, network volume)

    @property
    def local(self) -> str:
        return self.url.removeprefix("sqlite:///")

    def fetch(self) -> None:
        """Before the study is opened: the stored copy replaces the driver's local file (the stored one is what the
        sweep's runs agreed on; a local file with no stored copy is left over from an older sweep of this URI),
        unless the local file is that copy plus what a failed upload missed."""
        if self.upload_to is None:
            return
        Path(self.local).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not exists(self.upload_to):
            Path(self.local).unlink(missing_ok=True)
            return
        data = read_bytes(self.upload_to)
        if not data.startswith(_SQLITE_MAGIC):
            raise StorageError(
                f"{self.upload_to} is not a SQLite database (damaged or replaced)",
                field="storage.path",
                fix="restore it from a copy, or delete it to start the study afresh (the sweep's records stay)",
            )
        if _local_is_ahead(self.local, data):  # an upload failed after the stored copy was made: keep what it missed
            log.info("the local Optuna study %s is newer than its stored copy: kept", self.local)
            return
        tmp = f"{self.local}.tmp-{os.getpid()}"
        Path(tmp).write_bytes(data)
        os.replace(tmp, self.local)

    def upload(self) -> None:
        """Copy the driver's local file to the sweep's storage: a consistent snapshot (SQLite's backup API, so a
        transaction in flight is never half in it), written whole (trainer.storage.write_bytes)."""
        if self.upload_to is None or not os.path.exists(self.local):
            return
        src, snapshot = sqlite3.connect(self.local), sqlite3.connect(":memory:")
        try:
            src.backup(snapshot)
            data = snapshot.serialize()
        finally:
            src.close()
            snapshot.close()
        write_bytes(self.upload_to, data)


_FINISHED = ("COMPLETE", "PRUNED", "FAIL")  # optuna's TrialState names, as its `trials` table stores them


def _local_is_ahead(local: str, stored: bytes) -> bool:
    """Whether the driver's local file is the stored copy plus later changes: every stored trial is in it, started at
    the same time (not a leftover of an older sweep of this URI), in the same state where the stored one had ended,
    with at least as many fold scores. A local file that is not so (another driver went on from the stored copy,
    or it is damaged) is replaced."""
    if not os.path.exists(local):
        return False
    src, copy = sqlite3.connect(local), sqlite3.connect(":memory:")
    try:
        copy.deserialize(stored)
        (mine, my_scores), (theirs, their_scores) = _history(src), _history(copy)
    except sqlite3.Error:
        return False
    finally:
        src.close()
        copy.close()
    for number, (start, state) in theirs.items():
        if number not in mine or (start is not None and mine[number][0] != start):
            return False
        if state in _FINISHED and mine[number][1] != state:
            return False
    return my_scores >= their_scores


def _history(db: sqlite3.Connection) -> tuple[dict[int, tuple], int]:
    """({trial number: (start time, state)}, number of fold scores) of a study file (the sweep's only study)."""
    trials = {n: (start, state) for n, start, state in db.execute("SELECT number, datetime_start, state FROM trials")}
    return trials, db.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone()[0]


def study_store(cfg) -> StudyStore:
    uri = sweep_uri(cfg)
    if cfg.search.study_storage:
        return StudyStore(url=cfg.search.study_storage, name=cfg.name, sweep=uri)
    stored = SweepDir(uri).study
    local = local_path(uri)
    if local is not None and not on_network_fs(local):
        return StudyStore(url=f"sqlite:///{local_path(stored)}", name=cfg.name, sweep=uri)
    return StudyStore(url=f"sqlite:///{driver_copy(uri)}", name=cfg.name, sweep=uri, upload_to=stored)


def driver_copy(uri: str) -> str:
    """The driver's local SQLite file for a sweep whose storage cannot hold a live SQLite database: one per sweep URI,
    in this user's cache (not a shared /tmp, where another user could write it)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(cache / "zerotune" / "studies" / hashlib.sha256(uri.encode()).hexdigest()[:16] / "study.db")


def sync_study(cfg) -> None:
    """Upload the driver's local study, where the sweep keeps one (at the end of a run: a stopped run's running
    trials, since the last trial ended). A storage that fails here is the storage watch's to report."""
    try:
        study_store(cfg).upload()
    except (StorageError, OSError, sqlite3.Error) as exc:
        log.warning("could not upload the Optuna study of sweep %s: %s", cfg.name, exc)


def open_study(store: StudyStore, *, direction: str, sampler, metric: str):
    """(the study, whether it was created now). A new study is tagged with its sweep and its metric's name."""
    import optuna
    from sqlalchemy.pool import NullPool

    store.fetch()
    if store.url.startswith("sqlite:///"):
        Path(store.local).parent.mkdir(parents=True, exist_ok=True)
    try:
        # SQLite: no pooled connection held between operations, so the file is open only while the study is
        # read or written (a sweep directory can then be remounted read-only, or synced, without a driver's
        # open handle; the read-only storage test does exactly that).
        kwargs = {"engine_kwargs": {"poolclass": NullPool}} if store.url.startswith("sqlite:") else {}
        storage = optuna.storages.RDBStorage(store.url, **kwargs)
    except Exception as exc:  # SQLAlchemy's errors (unreachable server, refused login), a missing DB driver
        raise StorageError(
            f"cannot open the Optuna study storage {redacted(store.url)}: {type(exc).__name__}: {str(exc)[:300]}",
            field=FIELD,
            fix="check that the database is reachable from the driver, its driver package is installed and the "
            "credentials in the driver's environment are right",
        ) from None
    pruner = optuna.pruners.NopPruner()  # Tune's schedulers prune
    try:
        study = optuna.create_study(
            storage=storage, study_name=store.name, direction=direction, sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=store.name, sampler=sampler, pruner=pruner)
        owner = study.user_attrs.get(SWEEP_ATTR)
        if owner != store.sweep:
            raise ConfigError(
                [
                    (
                        FIELD,
                        f"the study {store.name!r} in {redacted(store.url)} belongs to another sweep ({owner})",
                        "use a new sweep name, another database, or delete that study (optuna delete-study)",
                    )
                ]
            ) from None
        return study, False
    study.set_user_attr(SWEEP_ATTR, store.sweep)
    with warnings.catch_warnings():  # experimental since optuna 3.2, and what the dashboard labels the axis with
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])
    return study, True


def redacted(url: str) -> str:
    """The URL with any password masked (sweeps.config refuses one; this keeps messages safe regardless)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


def study_storage_problems(url: str | None) -> list[tuple[str, str, str]]:
    """What is wrong with a `search.study_storage` URL, without connecting: (field, why, fix) each."""
    if not url:
        return []
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return [(FIELD, "not a SQLAlchemy database URL", "e.g. postgresql://HOST/DB or sqlite:////abs/path/study.db")]
    if parsed.password or any(k.lower() in ("password", "passwd") for k in parsed.query):
        why = "the URL carries a password; it would be written into config.json and job entrypoints"
        fix = "remove it; give it through the database driver's environment (PGPASSWORD, ~/.pgpass, option files)"
        return [(FIELD, why, fix)]
    try:
        parsed.get_dialect().import_dbapi()
    except Exception as exc:  # NoSuchModuleError (unknown dialect), ImportError (driver not installed)
        return [(FIELD, f"no database driver for {parsed.drivername!r}: {exc}", "install its driver package")]
    if parsed.get_backend_name() == "sqlite" and not os.path.isabs(parsed.database or ""):
        # relative to the driver's working directory: a temporary one under `ray job submit`, gone after the job
        why = f"a SQLite file needs an absolute path ({parsed.database or 'in memory'!r} is not one)"
        fix = "use sqlite:////abs/path/study.db, or leave search.study_storage unset for a study.db under the sweep"
        return [(FIELD, why, fix)]
    return []


def on_network_fs(path: str, mounts: str | None = None) -> bool:
    """Whether `path` is on a network filesystem (by the longest mount point above it in /proc/self/mounts)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return False  # not Linux: no way to tell, so the sweep's own directory is used
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in NETWORK_FS
