"""`zerotune` command line: one module per command group, one place for errors.

Each command module exposes `add_parser(subparsers)`; its handlers are thin and
call a library function. `main` is the only place that turns a `ZerotuneError`
into a message and an exit code; unknown errors keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from zerotune.errors import ConfigError, ZerotuneError

# Ctrl+C: the shell's code for a process ended by SIGINT (128 + 2), also when the command stopped on it cleanly.
EXIT_INTERRUPTED = 130
INTERRUPTED_MESSAGE = "interrupted; finished work is kept at the storage path (run the same command to resume)"

# Import paths, not modules: a command's heavy imports happen only when it runs.
_COMMAND_MODULES = (
    "sweeps.cli.train",
    "sweeps.cli.sweep",
    "sweeps.cli.report",
    "sweeps.cli.jobs",
    "sweeps.cli.cluster",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="zerotune",
        description="Fine-tuning sweeps of Hugging Face models scored by k-fold cross-validation "
        "(Ray Tune + Optuna + Ray Train + DeepSpeed ZeRO).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def emit(data, *, fmt: str, table) -> None:
    """Print `data` as JSON or through `table(data)`."""
    import json

    print(json.dumps(data, indent=2, default=str) if fmt == "json" else table(data), flush=True)


@contextlib.contextmanager
def data_stdout(fmt: str):
    """While a command runs, keep stdout for its data: with --format json, progress and library output go to stderr.

    Ray's log monitor prints its nodes' warnings to stdout until Ray shuts down, which would otherwise happen at
    exit, after the JSON: a Ray this command connected to is shut down while stdout still points at stderr."""
    if fmt != "json":
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield
        finally:
            ray = sys.modules.get("ray")  # never imported here for a command that did not use Ray
            if ray is not None and ray.is_initialized():
                ray.shutdown()


def format_error(exc: ZerotuneError) -> str:
    if isinstance(exc, ConfigError):
        return "\n".join(
            f"error: {field}: {message}" + (f"\n  fix: {fix}" if fix else "") for field, message, fix in exc.problems
        )
    head = f"error: {exc.field}: {exc.message}" if exc.field else f"error: {exc.message}"
    return head + (f"\n  fix: {exc.fix}" if exc.fix else "")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except ZerotuneError as exc:
        print(format_error(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)
