"""The sweep driver's watch on its storage: a path that disappears or turns read-only ends the sweep
the way Ctrl+C does (Tune saves nothing new, running trials stay resumable) instead of failing every
trial one write at a time."""

from __future__ import annotations

import os
import signal
import time

from ray.tune import Callback

from sweeps.layout import SweepDir, write_probe
from zerotune.errors import StorageError


def storage_problem(uri: str, lease=None) -> str | None:
    """Why the sweep directory can no longer be used by this run (holding `lease`), or None if it still can."""
    if lease is not None and lease.lost:
        return "was taken over by another run (this run's lease went stale: see storage.lease_timeout_s)"
    try:
        gone = not SweepDir(uri).exists()
    except StorageError as exc:  # an object store that does not answer (outage, network, credentials)
        return f"became unreachable ({exc.message})"
    if gone:
        return "disappeared (its config.json is gone)"
    try:
        write_probe(uri)
    except (StorageError, OSError) as exc:
        return f"became unwritable ({getattr(exc, 'message', None) or exc})"
    return None


class StorageWatch(Callback):
    """Probes the sweep directory every `every_s` seconds of the Tune loop; on a problem, interrupts Tune
    (SIGUSR1, which Tune treats as Ctrl+C) so that the sweep stops at once and can be resumed."""

    def __init__(self, uri: str, every_s: float = 2.0, lease=None):
        self.uri, self.every_s, self.lease, self._last = uri, every_s, lease, 0.0

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; a lease (a heartbeat thread) belongs to this run only,
        # and a resumed run gets a watch of its own.
        return {**self.__dict__, "lease": None}

    def on_step_begin(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        if storage_problem(self.uri, self.lease) is not None:
            os.kill(os.getpid(), signal.SIGUSR1)


def raise_if_storage_broke(uri: str, storage_path: str, name: str, lease=None) -> None:
    problem = storage_problem(uri, lease)
    if problem is not None:
        raise StorageError(
            f"the sweep directory {uri} {problem} during the sweep; "
            "it was stopped, and what it wrote before stays as it was",
            field="storage.path",
            fix=(
                "restore the storage (and write access), then run the same command again to resume; "
                f"until then `zerotune sweep status {name} --storage {storage_path}` reads what is there"
            ),
        )
