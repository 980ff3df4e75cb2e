"""`zerotune completion bash|zsh|tcsh`: the shell completion script, generated from the parser by shtab."""

from __future__ import annotations

SHELLS = ("bash", "zsh", "tcsh")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "completion",
        help="print the shell completion script (bash, zsh, tcsh)",
        description="Print a completion script for SHELL, generated from zerotune's own parser (shtab). Install it, "
        "e.g. bash: `zerotune completion bash > ~/.local/share/bash-completion/completions/zerotune`; zsh: `zerotune "
        'completion zsh > "${fpath[1]}/_zerotune"`; then open a new shell.',
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=_completion)


def completion_script(shell: str) -> str:
    import shtab

    from sweeps.cli import build_parser

    return shtab.complete(build_parser(), shell=shell)


def _completion(args) -> int:
    print(completion_script(args.shell))
    return 0
