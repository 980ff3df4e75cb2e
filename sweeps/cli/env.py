"""`zerotune env [NAME]`: the environment record (packages, CUDA/GPUs, git commit, command, config) of this machine
now, or the ones a sweep (and its latest refit) or a fit directory stored."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "env",
        help="package versions, CUDA/GPUs, git commit and command: of this machine, or as a sweep recorded them",
        description="Without NAME: this machine now. With NAME (a sweep directory or URI, a name under --storage, or "
        "a refit/train run directory): the records its runs wrote (environment.json), with their effective config "
        "in --format json.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="sweep directory or URI, a name under --storage, or a run")
    p.add_argument("--storage", default="./results", help="storage path the name is under")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_env)


def _env(args) -> int:
    from sweeps.cli import emit

    emit(_records(args.name, storage=args.storage), fmt=args.format, table=_table)
    return 0


def _records(name: str | None, *, storage: str) -> dict[str, dict]:
    from sweeps.layout import ENVIRONMENT, SweepDir
    from sweeps.results.environment import stored_records
    from sweeps.results.status import locate_sweep
    from trainer.storage import exists, join, read_json
    from zerotune.environment import record
    from zerotune.errors import StorageError

    if name is None:
        return {"current": record(kind="current")}
    if exists(join(name, ENVIRONMENT)) and not SweepDir(name).exists():  # one run's directory (refit/<stamp>, train-)
        return {"run": read_json(join(name, ENVIRONMENT))}
    records = stored_records(SweepDir(locate_sweep(name, storage=storage)))
    if not records:
        raise StorageError(
            f"the sweep {name!r} holds no environment record",
            field="NAME",
            fix="it was run before zerotune recorded environments: run `zerotune env` where it ran",
        )
    return records


def _table(records: dict[str, dict]) -> str:
    from zerotune.environment import summary_rows

    blocks = []
    for what, rec in records.items():
        rows = summary_rows(rec)
        width = max(len(k) for k, _ in rows)
        blocks.append("\n".join([f"[{what}]", *(f"  {k.ljust(width)}  {v}" for k, v in rows)]))
    return "\n\n".join(blocks)
