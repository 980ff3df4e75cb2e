"""The one exception family of zerotune.

Every error a user can fix derives from `ZerotuneError` and carries the fix.
The CLI prints `error: <message>` and `fix: <fix>` and exits with `exit_code`;
anything else keeps its traceback. This module imports nothing heavy so that
`cluster` and `sweeps` can share it.
"""

from __future__ import annotations


class ZerotuneError(Exception):
    """Base class. `field` names the config key at fault, `fix` says what to do."""

    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.fix = fix

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        tail = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}{self.message}{tail}"


class ConfigError(ZerotuneError):
    """The config or its data cannot work; raised before any cluster resource is taken.

    `problems` holds every (field, message, fix) found, so one run reports them all.
    """

    exit_code = 2

    def __init__(self, problems: list[tuple[str, str, str | None]]):
        self.problems = list(problems)
        field, message, fix = self.problems[0]
        super().__init__(message, field=field, fix=fix)

    def __str__(self) -> str:
        lines = []
        for field, message, fix in self.problems:
            tail = f" (fix: {fix})" if fix else ""
            lines.append(f"{field}: {message}{tail}")
        return "\n".join(lines)


class DataError(ConfigError):
    """The data set named by the config is missing, empty or does not fit the task."""


class StorageError(ZerotuneError):
    """The storage path cannot be read or written."""

    exit_code = 3


class ClusterError(ZerotuneError):
    """The Ray or Kubernetes cluster refused or cannot be reached."""

    exit_code = 4


class TrainingError(ZerotuneError):
    """A fit diverged (NaN/inf loss) or ran out of memory; the trial is recorded as failed."""

    exit_code = 5


def problem(field: str, message: str, fix: str | None = None) -> ConfigError:
    """Shorthand for a ConfigError with one problem."""
    return ConfigError([(field, message, fix)])
