"""`zerotune train CONFIG [key=value ...]`: one fit on a train/validation split."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from sweeps.config import config_help

    p = subparsers.add_parser(
        "train",
        help="one fine-tuning fit on a train/validation split",
        description="Train once on a stratified train/validation split (split.validation_fraction), "
        "export the model and write metrics.json next to the checkpoints.",
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="sweep/train YAML file")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("--no-export", action="store_true", help="skip exporting the trained model")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from sweeps.cli import data_stdout, emit, shows_worker_logs
    from sweeps.cli.tables import fit_table
    from sweeps.config import load_config
    from sweeps.final.train import run_fit

    cfg = load_config(args.config, args.overrides)
    with data_stdout(args.format):
        summary = run_fit(cfg, address=args.address, export=not args.no_export, worker_logs=shows_worker_logs(args))
    emit(summary, fmt=args.format, table=fit_table)
    return 0
