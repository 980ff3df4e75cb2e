"""The sweep's stored Optuna study, opened for reading by the report (its parameter-vs-score plots).

The report reads the sweep where it is given (a cluster's storage may be mounted elsewhere here): the study file
under that sweep directory (sweeps.layout), copied to a temporary file first when it is not on a local disk, or the
database of `search.study_storage`. It never opens a driver's local copy (sweeps.search.study), nor creates a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sweeps.layout import SweepDir
from trainer.storage import exists, local_path, read_bytes


@contextmanager
def stored_study(sweep_uri: str, cfg) -> Iterator[object | None]:
    """The sweep's optuna Study while the block runs; None when none was stored (a sweep that has not run a trial
    yet, one made before studies were stored, a synthetic one)."""
    import optuna
    from sqlalchemy.pool import NullPool

    with _readable_url(sweep_uri, cfg.search.study_storage) as url:
        if url is None:
            yield None
            return
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        kwargs = {"engine_kwargs": {"poolclass": NullPool}} if url.startswith("sqlite:") else {}
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True, **kwargs)
        try:
            study = optuna.load_study(study_name=cfg.name, storage=storage)  # the study is named after its sweep
        except KeyError:  # no study of that name in the database
            study = None
        try:
            yield study
        finally:
            storage.remove_session()
            storage.engine.dispose()


@contextmanager
def _readable_url(sweep_uri: str, study_storage: str | None) -> Iterator[str | None]:
    if study_storage:  # a database server (or an absolute SQLite path) the sweep was told to use
        yield study_storage
        return
    stored = SweepDir(sweep_uri).study
    local = local_path(stored)
    if local is not None:
        yield f"sqlite:///{os.path.abspath(local)}" if os.path.isfile(local) else None
        return
    if not exists(stored):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="zerotune-study-") as tmp:  # object storage: SQLite needs a file
        copy = os.path.join(tmp, "study.db")
        with open(copy, "wb") as f:
            f.write(read_bytes(stored))
        yield f"sqlite:///{copy}"
