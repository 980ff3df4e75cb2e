"""`zerotune sweep run|validate|status`."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    from sweeps.cli import EXIT_INTERRUPTED
    from sweeps.config import config_help
    from sweeps.search.resume import ALLOWED
    from sweeps.search.view import HEARTBEAT_S

    p = subparsers.add_parser("sweep", help="hyperparameter sweeps scored by k-fold cross-validation")
    sub = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run (or resume) a sweep",
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a sweep; running it again with the same name resumes it (finished trials are kept) with the "
        f"configuration it started with: only {', '.join(ALLOWED)} may change (num_trials only up). Ctrl+C stops it "
        f"(exit {EXIT_INTERRUPTED}) with its running trials `interrupted`: the same command resumes them.",
    )
    run.add_argument("config", help="sweep YAML file")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. search.num_trials=4")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded local Ray)")
    run.add_argument("--name", help="sweep name (default: the config's name)")
    run.add_argument("--storage", help="storage path or URI (default: the config's storage.path)")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="when resuming, run each failed trial again from scratch with the same parameters, as a new trial "
        "(the failed attempt stays on record); default: failed trials stay failed",
    )
    run.add_argument("--format", choices=["table", "json"], default="table")
    run.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT_S,
        metavar="S",
        help=f"seconds between progress lines within a long epoch (step, samples/s); 0: none (default {HEARTBEAT_S:g})",
    )
    run.set_defaults(func=_run)

    val = sub.add_parser(
        "validate",
        help="all pre-flight checks, no cluster",
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    val.add_argument("config")
    val.add_argument("overrides", nargs="*")
    val.add_argument("--address", help="also check worker counts against this running cluster")
    val.add_argument("--format", choices=["table", "json"], default="table")
    val.add_argument(
        "--explain-memory",
        action="store_true",
        help="also print the per-GPU memory estimate of the sweep's largest trial (component, GiB per GPU)",
    )
    val.set_defaults(func=_validate)

    st = sub.add_parser("status", help="trials of a sweep, read from its storage")
    st.add_argument("sweep", help="sweep directory or URI, or a name under --storage")
    st.add_argument("--storage", default="./results", help="storage path the name is under")
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.add_argument(
        "--watch",
        action="store_true",
        help="follow a running sweep: print the status again whenever it changes, until the run that writes the "
        "sweep ends (Ctrl+C stops watching)",
    )
    st.add_argument("--interval", type=float, default=5.0, metavar="S", help="--watch: seconds between reads")
    st.set_defaults(func=_status)


def _load(args):
    from sweeps.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "name", None):
        overrides.append(f"name={args.name}")
    if getattr(args, "storage", None):
        overrides.append(f"storage.path={args.storage}")
    return load_config(args.config, overrides)


def _run(args) -> int:
    import sys

    from sweeps.cli import EXIT_INTERRUPTED, INTERRUPTED_MESSAGE, data_stdout, emit
    from sweeps.cli.tables import sweep_table
    from sweeps.console import RunConsole
    from sweeps.search.run import run_sweep

    # The view's lines and the libraries' log (sweeps.console), from the first import of a library on; with
    # --format json the view goes to stderr.
    verbosity = getattr(args, "verbosity", 0)
    console = RunConsole(verbosity=verbosity, heartbeat_s=args.heartbeat, stderr=args.format == "json")
    with data_stdout(args.format), console:
        summary = run_sweep(_load(args), address=args.address, retry_failed=args.retry_failed, console=console)
    emit(summary, fmt=args.format, table=sweep_table)
    if summary.get("interrupted"):  # Tune ends its loop normally on Ctrl+C: the sweep did not finish
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if summary["best"] else 1


def _validate(args) -> int:
    from sweeps.preflight.memory import explain, memory_table
    from sweeps.preflight.validate import validate

    cfg = _load(args)
    memory = explain(cfg) if args.explain_memory else None
    if memory and args.format != "json":  # before the checks: a config that does not fit still shows why
        print(memory_table(memory))
    report = validate(cfg, address=args.address)
    if memory:
        report["memory"] = memory
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(f"ok: {line}" for line in report["checks"]))
    return 0


def _status(args) -> int:
    import sys

    from sweeps.cli import EXIT_INTERRUPTED, emit
    from sweeps.cli.tables import sweep_table
    from sweeps.results.status import sweep_status, watch_status

    if not args.watch:
        emit(sweep_status(args.sweep, storage=args.storage), fmt=args.format, table=sweep_table)
        return 0

    def show(status: dict) -> None:
        if args.format == "json":  # JSON Lines: one document per change, each parseable on its own
            print(json.dumps(status, default=str), flush=True)
            return
        if sys.stdout.isatty():
            print("\033[H\033[2J", end="")  # redraw in place on a terminal; a pipe gets one table after another
        print(f"{sweep_table(status)}\n", flush=True)

    try:
        watch_status(args.sweep, storage=args.storage, interval_s=args.interval, show=show)
    except KeyboardInterrupt:  # stops the watch only: nothing to resume, so no message
        return EXIT_INTERRUPTED
    return 0
