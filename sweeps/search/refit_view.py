"""The refit's lines in the sweep's console view (sweeps.search.view owns their patterns): when it starts, its
progress while it runs (read from its fit records, as the trials' heartbeats are), and its test score when done."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from sweeps.layout import SweepDir
from sweeps.search.view import POLL_S, clock, num, read_progress
from zerotune.errors import StorageError


class RefitProgress:
    """Refit lines while it runs: the fit's progress record (each epoch end, and the heartbeat within epochs), read
    from the newest refit directory that was not there before (sweeps.layout: each refit has its own)."""

    def __init__(self, sweep: SweepDir, *, write: Callable[[str], None], every_s: float):
        self.sweep, self.write, self.every_s = sweep, write, every_s
        self.before = set(self._runs())
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="refit-view", daemon=True)
        self._shown = (-1, -1)  # (epoch, step) last shown
        self._last = time.monotonic()  # the first heartbeat comes every_s after the start

    def __enter__(self) -> RefitProgress:
        if self.every_s:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _runs(self) -> list[str]:
        from trainer.storage import list_dir

        try:
            return list_dir(self.sweep.refit)
        except StorageError:
            return []

    def _run(self) -> None:
        from trainer.records import FitRecords
        from trainer.storage import join

        while not self._stop.wait(min(POLL_S, self.every_s)):
            new = sorted(set(self._runs()) - self.before)
            if not new:
                continue
            progress = read_progress(FitRecords(join(self.sweep.refit, new[-1], "records")))
            if progress is not None:
                self.show(progress)

    def show(self, progress) -> None:
        """A line at each epoch end (step = steps), else at most one each `every_s`."""
        at = (progress.epoch, progress.step)
        epoch_end = progress.step >= progress.steps
        if at == self._shown or (not epoch_end and time.monotonic() - self._last < self.every_s):
            return
        self._shown, self._last = at, time.monotonic()
        rate = f"  {progress.samples_per_s:.1f} samples/s" if progress.samples_per_s else ""
        self.write(
            f"refit epoch {progress.epoch + 1}/{progress.epochs} step {progress.step}/{progress.steps}{rate}"
            f"  elapsed {clock(time.monotonic() - self.started)}"
        )


def refit_started(trial_id: str, *, n_train: int, n_test: int) -> str:
    return f"refit of trial {trial_id} on {n_train} rows, scored on {n_test} test rows"


def refit_done(refit: dict, metric: str) -> str:
    """The refit's test score beside the cross-validated estimate it was chosen by."""
    cv = refit["cv"]
    return (
        f"refit done: test {metric} {num(refit['metrics'].get(metric, math.nan))} "
        f"(cross-validated {num(cv['mean'])} +/- {num(cv['std'])})"
    )
