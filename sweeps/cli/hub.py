"""`zerotune push NAME --repo ORG/MODEL`: a sweep's latest refit model and its report, to the Hugging Face hub."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "push",
        help="upload a sweep's latest refit model (with its card) and report to a Hugging Face model repository",
        description="Creates ORG/MODEL when missing and commits the refit's model directory at the repository's root "
        "(README.md is its model card), the sweep's report under report/ (built when missing) and the refit's "
        "metrics and environment record under zerotune/. Needs a token (`hf auth login` or HF_TOKEN) and "
        "HF_HUB_OFFLINE unset; HF_ENDPOINT picks another hub.",
    )
    p.add_argument("name", metavar="NAME", help="sweep directory or URI, or a name under --storage")
    p.add_argument("--repo", required=True, metavar="ORG/MODEL", help="the model repository to push to")
    p.add_argument("--storage", default="./results", help="storage path the name is under")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", help="branch to commit to (created when missing; default main)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_push)


def _push(args) -> int:
    from sweeps.cli import data_stdout, emit
    from sweeps.final.push import push

    with data_stdout(args.format):
        result = push(args.name, repo=args.repo, storage=args.storage, private=args.private, revision=args.revision)
    emit(result, fmt=args.format, table=_table)
    return 0


def _table(result: dict) -> str:
    return (
        f"pushed {len(result['files'])} files to {result['url']} ({result['revision']}, "
        f"{'private' if result['private'] else 'public'})\ncommit: {result['commit_url']}"
    )
