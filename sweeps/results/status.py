"""`zerotune sweep status`: what a sweep's storage says, with or without a live cluster."""

from __future__ import annotations

from zerotune.errors import StorageError
from trainer.storage import exists, join, read_json


def locate_sweep(sweep: str, *, storage: str) -> str:
    for candidate in (sweep, join(storage, sweep)):
        if exists(join(candidate, "config.json")):
            return candidate
    raise StorageError(f"no sweep at {sweep!r} (nor under {storage!r})", field="sweep", fix="pass the sweep directory, or its name with --storage")


def sweep_status(sweep: str, *, storage: str) -> dict:
    from sweeps.config import load_config
    from sweeps.results.collect import collect

    uri = locate_sweep(sweep, storage=storage)
    cfg = load_config(raw=read_json(join(uri, "config.json")))
    # Trials are re-read every time (a resumed sweep may be running); timing facts only the run knew come from summary.json.
    saved = read_json(join(uri, "summary.json")) if exists(join(uri, "summary.json")) else {}
    return {**saved, **collect(uri, cfg=cfg, finished=bool(saved))}
