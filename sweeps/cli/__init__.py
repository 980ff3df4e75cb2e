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
    "sweeps.cli.env",
    "sweeps.cli.hub",
    "sweeps.cli.completion",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="zerotune",
        description="Fine-tuning sweeps of Hugging Face models scored by k-fold cross-validation "
        "(Ray Tune + Optuna + Ray Train + DeepSpeed ZeRO).",
    )
    parser.add_argument("--version", action="version", version=f"zerotune {installed_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    for each in _parsers(parser):  # -q/-v before the command or after it: `zerotune sweep run x.yaml -v`
        verbosity_options(each, top=each is parser)
    return parser


def verbosity_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """`args.verbosity`: -1 (-q), 0, or 1 (-v); sweeps.console's QUIET, NORMAL and VERBOSE."""
    group = parser.add_mutually_exclusive_group()
    default = 0 if top else argparse.SUPPRESS  # a subcommand's parser must not reset what the top level parsed
    group.add_argument(
        "-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
        help="print only the final result (errors still show)",
    )  # fmt: skip
    group.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
        help="also show the libraries' own logs (Ray, Tune, DeepSpeed, transformers)",
    )  # fmt: skip


def shows_worker_logs(args) -> bool:
    """Whether a command that starts Ray workers forwards their output here: not under -q, nor with --format json
    (stdout is for the data)."""
    return getattr(args, "format", None) != "json" and getattr(args, "verbosity", 0) >= 0


def _parsers(parser: argparse.ArgumentParser):
    """`parser` and every subcommand's parser under it, once each (an alias names the same parser)."""
    seen = [parser]
    for each in seen:
        for action in each._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen += [p for p in action.choices.values() if p not in seen]
    return seen


def installed_version() -> str:
    """The installed distribution's version (package metadata: one place, pyproject.toml, says it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zerotune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def colour_allowed(env=None) -> bool:
    """False when the user asked for no colour (https://no-color.org: NO_COLOR set and not empty)."""
    import os

    return not (os.environ if env is None else env).get("NO_COLOR")


def honour_no_color() -> None:
    """Under NO_COLOR, turn off the colour this process would print: Ray's prefixes of worker log lines
    (colorama codes even in a pipe, unless RAY_COLOR_PREFIX=0). rich and optuna's logging read NO_COLOR themselves."""
    import os

    if not colour_allowed():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


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
    honour_no_color()
    from sweeps.console import apply_verbosity

    apply_verbosity(getattr(args, "verbosity", 0))
    try:
        result = args.func(args)
    except ZerotuneError as exc:
        print(format_error(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)
