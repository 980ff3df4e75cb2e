"""-q/-v on every command, before or after it: one `args.verbosity` (sweeps.console QUIET, NORMAL, VERBOSE)."""

import pytest

from sweeps.cli import _parsers, build_parser
from sweeps.console import NORMAL, QUIET, VERBOSE


def test_every_command_takes_quiet_and_verbose_before_or_after_it():
    parser = build_parser()
    assert parser.parse_args(["sweep", "status", "s"]).verbosity == NORMAL
    assert parser.parse_args(["-q", "sweep", "status", "s"]).verbosity == QUIET
    assert parser.parse_args(["sweep", "run", "x.yaml", "-v"]).verbosity == VERBOSE
    assert parser.parse_args(["-v", "sweep", "run", "x.yaml", "--quiet"]).verbosity == QUIET  # the last one said
    for each in _parsers(parser):
        assert {"-q", "-v"} <= set(each._option_string_actions), each.prog


def test_quiet_and_verbose_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["sweep", "status", "s", "-q", "-v"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
