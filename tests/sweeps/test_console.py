"""sweeps/console.py: the view's lines reach the terminal; everything else the process writes (Python, C-level
writes to the descriptors) reaches the run's log, which moves under the sweep once the run writes there."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from sweeps.console import RunConsole

    with RunConsole(verbosity=int(sys.argv[2])) as console:
        print("library print before the sweep exists")
        os.write(2, b"C-level stderr\\n")
        console.line("sweep s: a view line")
        console.attach(sys.argv[1])
        print("library print after attach", flush=True)
        console.line("sweep s: another view line")
    print("after the run: the terminal again")
    """
)


def _run(log, verbosity):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), str(verbosity)], capture_output=True, text=True, timeout=60
    )


def test_library_output_goes_to_the_sweeps_log_and_only_view_lines_to_the_terminal(tmp_path):
    log = tmp_path / "s" / "run.log"
    done = _run(log, 0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "sweep s: a view line",
        "sweep s: another view line",
        "after the run: the terminal again",
    ]
    assert done.stderr == ""
    text = log.read_text()
    for line in ("library print before the sweep exists", "C-level stderr", "library print after attach"):
        assert line in text
    assert "view line" not in text


def test_quiet_shows_no_view_lines_and_verbose_shows_the_libraries_too(tmp_path):
    quiet = _run(tmp_path / "q.log", -1)
    assert quiet.stdout.splitlines() == ["after the run: the terminal again"] and quiet.stderr == ""
    verbose = _run(tmp_path / "v.log", 1)
    terminal = verbose.stdout + verbose.stderr
    for line in ("library print before the sweep exists", "C-level stderr", "sweep s: a view line"):
        assert line in terminal
    assert "C-level stderr" in (tmp_path / "v.log").read_text()
