"""zerotune's own console view of a sweep: one plain line per event that matters, rendered by the driver.

    sweep NAME: ...                                        what the run does (rows, folds, trials, where)
    trial 4/12 [lr 3.1e-4 bs 16] fold 2/3 epoch 1/2  f1_macro 0.8100  best 0.8300 (trial 2)  elapsed 6m12s  ETA ~9m
    trial 4/12 [...] fold 2/3 epoch 1/2 step 40/120  35.2 samples/s  elapsed 6m40s      a heartbeat within an epoch
    trial 4/12 [...] completed|pruned|failed ...           how a trial ended, and why
    refit ...                                              the refit of the best trial

The lines come from Tune's results (one per epoch) and the trials' fit records (the heartbeat: the progress record
that rank 0 rewrites within long epochs, trainer.epoch_end.write_progress), never from the workers' own output,
which goes to the run's log file with the libraries' (sweeps.console). `LINE_PATTERNS` is every line this view
prints: the one whitelist that a test holds a piped sweep's console to.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sweeps.layout import SweepDir
from trainer.metrics import better
from zerotune.errors import StorageError

# Marks an epoch that ran again: Ray Train restarted the trial's worker group from its last checkpoint.
AGAIN = "again after a restart"
HEARTBEAT_S = 30.0  # default seconds between heartbeat lines of one running fit (`sweep run --heartbeat`)
POLL_S = 2.0  # how often the driver reads the running fits' progress records

# Short names of the usual parameters, so that a trial's line stays one line.
SHORT = {"learning_rate": "lr", "batch_size": "bs", "epochs": "ep", "weight_decay": "wd", "warmup_ratio": "warmup"}

_NUM = r"-?(?:\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|inf)"
_CLOCK = r"(?:\d+h)?(?:\d+m)?\d+s|\d+h\d\dm|\d+m"
_TRIAL = r"trial \d+/\d+ \[[^\]]*\]"
_TAIL = rf"  elapsed (?:{_CLOCK})(?:  ETA ~(?:{_CLOCK}))?"
LINE_PATTERNS = {
    "start": re.compile(r"sweep \S+: \d+ rows, \d+ folds \(\w+\), \d+ trials, \d+ at once -> \S+"),
    "resume": re.compile(r"sweep \S+: resuming from \S+"),
    "takeover": re.compile(r"sweep \S+: taking over the sweep \S+ from the run on .+"),
    "changes": re.compile(r"sweep \S+: resumes with changes: .+"),
    "log": re.compile(r"sweep \S+: library logs -> \S+( \(-v shows them here\))?"),
    "epoch": re.compile(
        rf"{_TRIAL} fold \d+/\d+ epoch \d+/\d+(?: {AGAIN})?  \S+ {_NUM}(?:  best {_NUM} \(trial \d+\))?{_TAIL}"
    ),
    "heartbeat": re.compile(rf"{_TRIAL} fold \d+/\d+ epoch \d+/\d+ step \d+/\d+(?:  {_NUM} samples/s)?{_TAIL}"),
    "completed": re.compile(rf"{_TRIAL} completed: \S+ {_NUM} \+/- {_NUM} over \d+ folds{_TAIL}"),
    "pruned": re.compile(rf"{_TRIAL} pruned after \d+/\d+ folds: \S+ {_NUM} \(mean so far\), .+{_TAIL}"),
    "failed": re.compile(rf"{_TRIAL} failed: .+{_TAIL}"),
    "interrupted": re.compile(r"sweep \S+ was interrupted: run the same command again to resume it"),
    "refit": re.compile(r"refit of trial \S+ on \d+ rows, scored on \d+ test rows"),
    "refit_progress": re.compile(rf"refit epoch \d+/\d+ step \d+/\d+(?:  {_NUM} samples/s)?{_TAIL}"),
    "refit_done": re.compile(rf"refit done: test \S+ {_NUM} \(cross-validated {_NUM} \+/- {_NUM}\)"),
}


def is_view_line(line: str) -> bool:
    return any(p.fullmatch(line) for p in LINE_PATTERNS.values())


def clock(seconds: float) -> str:
    """6m12s; 1h05m past an hour (seconds no longer matter there)."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def rough(seconds: float) -> str:
    """An estimate's precision: whole minutes past one, else seconds."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{round(s / 60)}m" if s >= 60 else f"{s}s"


def num(value) -> str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def short_params(params: dict) -> str:
    out = []
    for key, value in params.items():
        name = SHORT.get(key, key.rsplit(".", 1)[-1])
        if isinstance(value, float):
            value = f"{value:.1e}" if key == "learning_rate" or abs(value) < 1e-2 else f"{value:.3g}"
        out.append(f"{name} {value}")
    return " ".join(out)


def eta_s(*, remaining_folds: int, fold_seconds: list[float], concurrent: int) -> float | None:
    """Remaining fold fits x mean fold time / trials at once; None before a fold has ended."""
    if not fold_seconds:
        return None
    return max(0, remaining_folds) * (sum(fold_seconds) / len(fold_seconds)) / max(1, concurrent)


@dataclass
class TrialLine:
    """What the view knows of one trial: its number (Tune's creation order), params, folds and fold times."""

    number: int
    params: dict
    epochs: int
    folds_done: int = 0
    objective: float = math.nan  # mean of the finished folds
    fold_started: float = field(default_factory=time.monotonic)
    ended: bool = False
    last_line: float = field(default_factory=time.monotonic)
    progress_time: float = 0.0  # the latest progress record already shown
    shown: set = field(default_factory=set)  # (fold, epoch) lines shown


class SweepProgress:
    """The view's state and its lines (pure: the Tune callback feeds it, tests drive it directly)."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        k: int,
        num_trials: int,
        concurrent: int,
        epochs: Callable[[dict], int],
        write: Callable[[str], None],
        now: Callable[[], float] = time.monotonic,
    ):
        self.metric, self.mode, self.k, self.num_trials, self.concurrent = metric, mode, k, num_trials, concurrent
        self.epochs, self.write, self.now = epochs, write, now
        self.started = now()
        self.trials: dict[str, TrialLine] = {}
        self.fold_seconds: list[float] = []
        self.best: tuple[float, int] | None = None  # (mean of finished folds, trial number)

    # -- events ---------------------------------------------------------------------------------
    def trial(self, trial_id: str, *, number: int, params: dict) -> TrialLine:
        if trial_id not in self.trials:
            self.trials[trial_id] = TrialLine(number=number, params=params, epochs=self.epochs(params))
            self.trials[trial_id].fold_started = self.trials[trial_id].last_line = self.now()
        return self.trials[trial_id]

    def epoch(self, trial_id: str, result: dict) -> None:
        t = self.trials[trial_id]
        folds_done = int(result.get("folds_done", 0))
        if folds_done > t.folds_done:  # this epoch ended a fold
            now = self.now()
            self.fold_seconds += [(now - t.fold_started) / (folds_done - t.folds_done)] * (folds_done - t.folds_done)
            t.fold_started, t.folds_done = now, folds_done
            t.objective = float(result.get("objective", math.nan))
            if self.best is None or better(t.objective, self.best[0], self.mode):
                self.best = (t.objective, t.number)
        score = result.get(f"epoch_{self.metric}", math.nan)
        best = f"  best {num(self.best[0])} (trial {self.best[1]})" if self.best else ""
        fold, epoch = int(result.get("fold", 0)), int(result.get("epoch", 0))
        again = f" {AGAIN}" if (fold, epoch) in t.shown else ""
        t.shown.add((fold, epoch))
        self._line(t, f"fold {fold + 1}/{self.k} epoch {epoch + 1}/{t.epochs}{again}  {self.metric} {num(score)}{best}")

    def heartbeat(self, trial_id: str, progress, *, every_s: float) -> None:
        """A line from the fit's progress record (trainer.records.FitProgress) when it is new and the trial has
        printed nothing for `every_s` seconds."""
        t = self.trials.get(trial_id)
        if t is None or t.ended or progress is None or progress.time <= t.progress_time:
            return
        if self.now() - t.last_line < every_s:
            return
        t.progress_time = progress.time
        rate = f"  {progress.samples_per_s:.1f} samples/s" if progress.samples_per_s else ""
        where = f"fold {progress.fold + 1}/{progress.k} epoch {progress.epoch + 1}/{progress.epochs}"
        self._line(t, f"{where} step {progress.step}/{progress.steps}{rate}")

    def completed(self, trial_id: str, fold_scores: list[float]) -> None:
        import numpy as np

        t = self._end(trial_id)
        mean = float(np.mean(fold_scores)) if fold_scores else math.nan
        std = float(np.std(fold_scores)) if len(fold_scores) > 1 else 0.0
        if self.best is None or better(mean, self.best[0], self.mode):
            self.best = (mean, t.number)
        self._line(t, f"completed: {self.metric} {num(mean)} +/- {num(std)} over {len(fold_scores)} folds")

    def pruned(self, trial_id: str, *, folds_done: int, objective: float, scheduler: str) -> None:
        t = self._end(trial_id)
        self._line(
            t,
            f"pruned after {folds_done}/{self.k} folds: {self.metric} {num(objective)} (mean so far), "
            f"stopped by the {scheduler} scheduler",
        )

    def failed(self, trial_id: str, why: str) -> None:
        self._line(self._end(trial_id), f"failed: {why}")

    # -- the line -------------------------------------------------------------------------------
    def _end(self, trial_id: str) -> TrialLine:
        t = self.trials[trial_id]
        t.ended = True
        return t

    def remaining_folds(self) -> int:
        running = [t for t in self.trials.values() if not t.ended]
        ended = len(self.trials) - len(running)
        unstarted = max(0, self.num_trials - ended - len(running))
        return unstarted * self.k + sum(self.k - t.folds_done for t in running)

    def tail(self) -> str:
        eta = eta_s(remaining_folds=self.remaining_folds(), fold_seconds=self.fold_seconds, concurrent=self.concurrent)
        return f"  elapsed {clock(self.now() - self.started)}" + (f"  ETA ~{rough(eta)}" if eta is not None else "")

    def _line(self, t: TrialLine, text: str) -> None:
        t.last_line = self.now()
        self.write(f"trial {t.number}/{self.num_trials} [{short_params(t.params)}] {text}{self.tail()}")


def trial_number(trial) -> int:
    """Tune's creation order of the trial (its experiment tag starts with it), which a resumed sweep keeps."""
    head = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return int(head) if head.isdigit() else 0


def sweep_view(cfg, *, sweep_uri: str, concurrent: int, write: Callable[[str], None], heartbeat_s: float):
    """The Tune callback that renders the view (built here, not at import: the formatting above needs no Ray)."""
    from ray.tune import Callback

    from sweeps.search.space import apply_params

    sweep = SweepDir(sweep_uri)
    state = SweepProgress(
        metric=cfg.metric,
        mode=cfg.mode,
        k=cfg.folds.k,
        num_trials=cfg.search.num_trials,
        concurrent=concurrent,
        epochs=lambda params: apply_params(cfg, params)[0].epochs,
        write=write,
    )
    scheduler = cfg.search.scheduler.type

    class SweepView(Callback):
        def __init__(self):
            self._polled = 0.0

        def _trial(self, trial):
            params = {k: v for k, v in (trial.config or {}).items() if not k.startswith("__")}
            return state.trial(trial.trial_id, number=trial_number(trial), params=params)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._trial(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._trial(trial)
            state.epoch(trial.trial_id, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._trial(trial)
            trial_ended(state, sweep, trial.trial_id, trial.last_result or {}, scheduler=scheduler)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._trial(trial)
            error = _error(trial) or "an error (see the run's log)"
            state.failed(trial.trial_id, failure(sweep, trial.trial_id, k=cfg.folds.k, error=error) or str(error))

        def on_step_begin(self, iteration, trials, **info):
            if time.monotonic() - self._polled < min(POLL_S, heartbeat_s or POLL_S):
                return
            self._polled = time.monotonic()
            for trial in trials:
                if trial.status in ("TERMINATED", "ERROR") and trial.trial_id not in state.trials:
                    self._trial(trial).ended = True  # ended in an earlier run of a resumed sweep: not in the ETA
                elif heartbeat_s and trial.status == "RUNNING" and trial.trial_id in state.trials:
                    progress = read_progress(sweep.trial(trial.trial_id).records)
                    state.heartbeat(trial.trial_id, progress, every_s=heartbeat_s)

        def __reduce__(self):
            # Tune pickles its callbacks with the experiment: this one holds the console, and a resumed run gets a
            # view of its own.
            return (_no_view, ())

    return SweepView()


def _no_view():
    """What a saved experiment keeps of the view: a callback that does nothing."""
    from ray.tune import Callback

    return Callback()


def trial_ended(state: SweepProgress, sweep: SweepDir, trial_id: str, last: dict, *, scheduler: str) -> None:
    """The line of a trial that Tune ended without an error: completed, or stopped by the scheduler, unless its
    records say it failed (a fold that diverged as the scheduler stopped it), as the summary will."""
    from sweeps.search.objective import fold_scores

    folds_done = int(last.get("folds_done", 0))
    why = failure(sweep, trial_id, k=state.k, error=None)
    if why is not None:
        state.failed(trial_id, why)
    elif folds_done >= state.k:
        state.completed(trial_id, fold_scores(last, state.metric))
    else:
        objective = float(last.get("objective", math.nan))
        state.pruned(trial_id, folds_done=folds_done, objective=objective, scheduler=scheduler)


def failure(sweep: SweepDir, trial_id: str, *, k: int, error) -> str | None:
    """How a trial failed, from its records first (trainer.outcome.classify), as the summary says it; None when it
    did not (`error` None: Tune saw no error)."""
    from trainer.outcome import classify

    records = sweep.trial(trial_id).records
    try:
        folds, oom = records.folds(), records.oom()
    except StorageError as exc:
        return f"its records cannot be read ({exc.message})"
    ended = classify(folds=folds, k=k, oom=oom, error=error)
    return str(ended) if ended.outcome.failed else None


def _error(trial):
    """The trial's exception, unwrapped from Ray's task error; None when Tune kept none."""
    try:
        error = trial.get_pickled_error()
    except Exception:  # a damaged or unpicklable record: the records still say how it ended
        return None
    error = getattr(error, "cause", None) or error
    if error is not None and str(error).startswith("trial "):  # run_trial's TrainingError: its first line's end
        return str(error).splitlines()[0].split(" ", 2)[-1]
    return error


def read_progress(records):
    try:
        return records.progress()
    except StorageError:  # being rewritten: the next poll reads it
        return None
