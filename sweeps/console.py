"""The console of a long command (`zerotune sweep run`): zerotune's view on the terminal, the libraries' output in
the run's log file.

Ray, Tune, Ray Train, DeepSpeed and transformers write to the process's stdout and stderr through Python loggers,
print calls, C++ logging (Ray's core worker) and the workers' forwarded output (Ray's log_to_driver): only the file
descriptors catch all of them. While a `RunConsole` is open, descriptors 1 and 2 write to the log file (`-v`: to
the terminal as well), and the view's lines go to a copy of the original stdout.

The log is a local temporary file while the run lasts: nothing may be written under a sweep before its checks pass,
and a file held open on the storage would keep its volume from being remounted or unmounted. `attach` names the
sweep's log (sweeps.layout: SweepDir.log), to which the run's log is added when the console closes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import TextIO

from trainer.storage import exists, read_bytes, write_bytes
from zerotune.errors import StorageError, ZerotuneError

QUIET, NORMAL, VERBOSE = -1, 0, 1


class RunConsole:
    """`line(text)`: one line of the view (none under QUIET), on stdout (`stderr`: on stderr, which keeps stdout for
    data). Library output: the log file, and the terminal under VERBOSE. `heartbeat_s`: seconds between heartbeat
    lines of a running fit (0: none)."""

    def __init__(self, *, verbosity: int = NORMAL, heartbeat_s: float = 30.0, stderr: bool = False):
        self.verbosity, self.heartbeat_s, self._fd = verbosity, heartbeat_s, 2 if stderr else 1
        self.path: str | None = None  # the log file on this machine
        self.uri: str | None = None  # where it ends: the sweep's log (None until attached)
        self.stream: TextIO | None = None
        self._lock = threading.Lock()
        self._saved: tuple[int, int] | None = None
        self._tee: threading.Thread | None = None
        self._pipe: int | None = None

    # -- the view's side ------------------------------------------------------------------------
    def line(self, text: str) -> None:
        if self.verbosity >= NORMAL and self.stream is not None:
            with self._lock:
                print(text, file=self.stream, flush=True)

    # -- the libraries' side --------------------------------------------------------------------
    def __enter__(self) -> RunConsole:
        _flush()
        self._saved = (os.dup(1), os.dup(2))
        self.stream = os.fdopen(os.dup(self._fd), "w", buffering=1)
        fd, self.path = tempfile.mkstemp(prefix="zerotune-run-", suffix=".log")
        self._log = os.fdopen(fd, "ab", buffering=0)
        if self.verbosity >= VERBOSE:
            read, self._pipe = os.pipe()
            self._tee = threading.Thread(target=self._copy, args=(read,), name="console-tee", daemon=True)
            self._tee.start()
            target = self._pipe
        else:
            target = self._log.fileno()
        os.dup2(target, 1)
        os.dup2(target, 2)
        return self

    def _copy(self, read: int) -> None:
        """-v: every library byte to the log and to the terminal."""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                with self._lock:
                    self._log.write(chunk)
                    self.stream.buffer.write(chunk)
                    self.stream.buffer.flush()

    def attach(self, uri: str) -> None:
        """From now on the log is the sweep's (`uri`): it stays on this machine while the run lasts and is added to the
        sweep's log when the run ends. A file held open on the storage would keep a volume from being remounted or
        unmounted (and an object store has no appends)."""
        self.uri = uri

    def __exit__(self, kind, exc, tb) -> None:
        _flush()
        ray = sys.modules.get("ray")  # its log monitor prints until it shuts down: into this log, not the terminal
        if ray is not None and ray.is_initialized():
            with contextlib.suppress(Exception):
                ray.shutdown()
        _flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        if self._tee is not None:
            os.close(self._pipe)
            self._tee.join(timeout=5)
        self._log.close()
        self.stream.close()
        self.stream = None
        if self.uri is not None:
            self._upload()
        else:
            self._unattached(kind)

    def _upload(self) -> None:
        """The log after the sweep's earlier runs' logs; where that fails (the outage that may have ended the run), it
        stays here."""
        try:
            earlier = read_bytes(self.uri) if exists(self.uri) else b""
            with open(self.path, "rb") as f:
                write_bytes(self.uri, earlier + f.read())
        except (StorageError, OSError) as exc:
            print(f"library logs of this run: {self.path} ({getattr(exc, 'message', exc)})", file=sys.stderr)
            return
        os.unlink(self.path)

    def _unattached(self, kind) -> None:
        """A run that ended before writing its sweep (a refused config, Ctrl+C) leaves nothing; an unexpected error
        keeps the log, where the libraries said what happened."""
        if kind is None or issubclass(kind, (ZerotuneError, KeyboardInterrupt)):
            os.unlink(self.path)
        else:
            print(f"library logs of this run: {self.path}", file=sys.stderr)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def apply_verbosity(verbosity: int) -> None:
    """-q/-v for every command: the Python logging level of this process and of the Ray workers it starts (they read
    the environment), transformers' own verbosity included. `sweep run` also routes library output (RunConsole)."""
    import logging

    level = {QUIET: logging.ERROR, VERBOSE: logging.INFO}.get(verbosity)
    if level is None:
        return
    logging.getLogger().setLevel(level)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", logging.getLevelName(level).lower())
    if verbosity == QUIET:
        import warnings

        warnings.simplefilter("ignore")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
