"""Code shared by all three packages (trainer, sweeps, cluster) without any of them depending on another, and the
Python API (zerotune.api) on top of them, re-exported here lazily: `import zerotune` stays cheap and imports
nothing else until one of the API's names is used."""

from __future__ import annotations

API = ("load_config", "run_sweep", "load_sweep", "build_report", "predict", "Sweep", "Trial", "Fold")
__all__ = list(API)


def __getattr__(name: str):
    if name in API:
        from zerotune import api

        return getattr(api, name)
    raise AttributeError(f"module 'zerotune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
