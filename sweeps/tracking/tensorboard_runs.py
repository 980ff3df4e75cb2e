"""TensorBoard event files under the sweep (sweeps.layout `tensorboard_run`): one run directory per trial (each
fold's score at step = fold, then mean/std) and one per fold inside it (per-epoch metrics, step = epoch).

Written with tensorboardX (Ray Tune's own dependency). On object storage, where event files cannot be appended to,
they are written in a directory of the driver's and each run directory is copied to the sweep once it is written.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sweeps.layout import SweepDir
from sweeps.tracking.runs import FOLD, STATE, TRIAL, Run
from trainer.storage import exists, join, list_dir, local_path, write_bytes


class TensorBoardRuns:
    def __init__(self, sweep_uri: str):
        self.sweep = SweepDir(sweep_uri)
        local = local_path(self.sweep.tensorboard)
        self.staging = None if local is not None else _driver_dir(sweep_uri)

    def sync(self, trial: Run, *, parent: Run, folds: list[tuple[Run, list]], deepspeed: dict | None) -> None:
        for fold, score in folds:
            self.log_fold(fold, trial_id=trial.tags[TRIAL], score=score)
        if trial.status != "RUNNING":
            self.close_trial(trial)

    def log_fold(self, fold: Run, *, trial_id: str, score: list[tuple[str, float, int]]) -> bool:
        """Write a finished fold's run once (False: its directory already holds events), and its score on the
        trial's run."""
        where = self.sweep.tensorboard_run(trial_id, int(fold.tags[FOLD]))
        if exists(where) and any(n.startswith("events.") for n in list_dir(where)):
            return False
        self._write(where, fold.metrics, text={"params": fold.params, "tags": fold.tags})
        if score:
            self._write(self.sweep.tensorboard_run(trial_id), score)
        return True

    def close_trial(self, run: Run) -> None:
        """The trial's mean/std, params and state, once per state it ends in (a resumed trial may end otherwise)."""
        where, mark = self.sweep.tensorboard_run(run.tags[TRIAL]), f".ended-{run.tags[STATE]}"
        if exists(where) and any(n.endswith(mark) for n in list_dir(where)):
            return
        self._write(where, run.metrics, text={"params": run.params, "tags": run.tags}, mark=mark)

    def _write(self, uri: str, metrics: list[tuple[str, float, int]], text: dict | None = None, mark: str = "") -> None:
        from tensorboardX import SummaryWriter

        directory = local_path(uri) if self.staging is None else self._staged(uri)
        # A file of its own per write: tensorboardX names files by the second and host, and a second write into the
        # same run directory within that second would replace the first.
        writer = SummaryWriter(logdir=directory, flush_secs=1, filename_suffix=f".{os.getpid()}.{time.time_ns()}{mark}")
        try:
            for key, value, step in metrics:
                writer.add_scalar(key, value, global_step=step)
            for name, pairs in (text or {}).items():
                table = "\n".join(f"| {k} | {v} |" for k, v in sorted(pairs.items()))
                writer.add_text(name, f"| key | value |\n|---|---|\n{table}", global_step=0)
        finally:
            writer.close()
        if self.staging is not None:
            self._upload(directory, uri)

    def _staged(self, uri: str) -> str:
        relative = uri.removeprefix(self.sweep.tensorboard).strip("/")
        return str(Path(self.staging, relative))

    @staticmethod
    def _upload(directory: str, uri: str) -> None:
        for name in os.listdir(directory):
            path = Path(directory, name)
            if path.is_file():
                write_bytes(join(uri, name), path.read_bytes())


def _driver_dir(uri: str) -> str:
    """The driver's own directory for a sweep on object storage: one per sweep URI, in this user's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(cache / "zerotune" / "tensorboard" / hashlib.sha256(uri.encode()).hexdigest()[:16])
