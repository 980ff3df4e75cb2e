"""The command line's surface: --version, shell completion, NO_COLOR, and the `job` group with its old spellings."""

import io
import shutil
import subprocess
from importlib.metadata import version

import pytest

from sweeps.cli import build_parser, main


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"zerotune {version('zerotune')}"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_bash_completion_script_completes_commands_and_options(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; COMP_POINT={len(line)}; "
            '_shtab_zerotune; echo "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("zerotune", "job", "s") == ["submit", "status"]
    assert complete("zerotune", "sweep", "status", "--fo") == ["--format"]
    assert "completion" in complete("zerotune", "c")


def test_the_zsh_script_covers_every_command(capsys):
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef zerotune")
    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(name in script for name in commands)


def test_no_color_turns_ray_prefix_colours_off(monkeypatch):
    """Ray colours its worker-log prefixes with ANSI codes even in a pipe, unless RAY_COLOR_PREFIX=0."""
    from ray._private.worker import print_worker_logs

    from sweeps.cli import honour_no_color

    def printed() -> str:
        out = io.StringIO()
        print_worker_logs({"pid": 7, "ip": "10.0.0.1", "localhost": "10.0.0.1", "lines": ["fold 1/3"]}, out)
        return out.getvalue()

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setenv("NO_COLOR", "")  # set but empty: colour stays (no-color.org)
    honour_no_color()
    assert "\x1b[" in printed()
    monkeypatch.setenv("NO_COLOR", "1")
    honour_no_color()
    assert "\x1b[" not in printed() and "fold 1/3" in printed()


def test_job_logs_drop_colour_codes_under_no_color():
    from sweeps.cli.jobs import _without_colour

    assert (
        _without_colour("\x1b[36m(RayTrainWorker pid=7)\x1b[0m fold \x1b[1;33m1\x1b[0m")
        == "(RayTrainWorker pid=7) fold 1"
    )


def _outside_config(tmp_path, monkeypatch) -> str:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("data:\n  path: d.csv\n")
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    return str(outside)


def test_job_commands_are_grouped(tmp_path, monkeypatch, capsys):
    outside = _outside_config(tmp_path, monkeypatch)
    # refused before any connection (the address does not even resolve), with no deprecation note
    assert main(["job", "submit", outside, "--address", "http://no-such-host.invalid:8265"]) == 2
    err = capsys.readouterr().err
    assert "outside the current directory" in err and "deprecated" not in err
    for name in ("status", "logs"):
        args = build_parser().parse_args(["job", name, "raysubmit_1", "--address", "http://h:8265"])
        assert (args.command, args.job_command, args.job_id) == ("job", name, "raysubmit_1")


@pytest.mark.parametrize("name", ["submit", "status", "logs"])
def test_the_old_top_level_spellings_still_work_with_a_deprecation_note(tmp_path, monkeypatch, capsys, name):
    outside = _outside_config(tmp_path, monkeypatch)
    target = outside if name == "submit" else "raysubmit_1"
    # no token anywhere and an unresolvable address: the command runs and fails on the connection (or the config)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    code = main([name, target, "--address", "http://no-such-host.invalid:8265"])
    err = capsys.readouterr().err
    assert err.startswith(f"note: `zerotune {name}` is deprecated") and f"use `zerotune job {name}`" in err
    assert code != 0 and "error:" in err
