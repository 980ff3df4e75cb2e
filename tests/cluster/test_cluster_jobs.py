"""cluster/jobs.py without a cluster: where the token comes from, and the entrypoint."""

from __future__ import annotations

import shlex

import pytest

from cluster.jobs import resolve_token, sweep_entrypoint
from zerotune.errors import ClusterError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_token_precedence(home, tmp_path):
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("from-default-file\n")
    explicit = tmp_path / "explicit"
    explicit.write_text("  from-flag \n")
    assert resolve_token(env={}) == "from-default-file"
    assert resolve_token(env={"RAY_AUTH_TOKEN": "from-env"}) == "from-env"
    assert resolve_token(token_file=str(explicit), env={"RAY_AUTH_TOKEN": "from-env"}) == "from-flag"
    pointed = tmp_path / "pointed"
    pointed.write_text("from-path-env")
    assert resolve_token(env={"RAY_AUTH_TOKEN_PATH": str(pointed)}) == "from-path-env"


def test_no_token_anywhere_is_none(home):
    assert resolve_token(env={"RAY_AUTH_TOKEN": "  "}) is None


def test_explicit_token_file_must_exist(home, tmp_path):
    with pytest.raises(ClusterError) as err:
        resolve_token(token_file=str(tmp_path / "missing"), env={})
    assert err.value.field == "token-file" and "RAY_AUTH_TOKEN" in err.value.fix
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ClusterError, match="empty"):
        resolve_token(token_file=str(empty), env={})


def test_sweep_entrypoint_is_shell_safe():
    line = sweep_entrypoint(config="configs/my sweep.yaml", overrides=["search.num_trials=4"], storage="s3://b/p")
    assert shlex.split(line) == [
        "python",
        "-m",
        "sweeps",
        "sweep",
        "run",
        "configs/my sweep.yaml",
        "search.num_trials=4",
        "storage.path=s3://b/p",
    ]


def test_submit_refuses_a_config_outside_the_uploaded_directory(tmp_path, monkeypatch, capsys):
    from sweeps.cli import main

    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("data:\n  path: d.csv\n")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    # refused before any connection: the address does not even resolve
    assert main(["job", "submit", str(outside), "--address", "http://no-such-host.invalid:8265"]) == 2
    assert "outside the current directory" in capsys.readouterr().err


def test_a_malformed_token_is_refused_without_being_shown(tmp_path):
    """A token file with an inner newline would make the HTTP client's error quote `Bearer <token>`."""
    two_lines = tmp_path / "token"
    two_lines.write_text("secret-part-one\nsecret-part-two\n")
    with pytest.raises(ClusterError) as err:
        resolve_token(token_file=str(two_lines), env={})
    assert err.value.field == "token-file" and "secret" not in str(err.value) + (err.value.fix or "")
    with pytest.raises(ClusterError) as err:
        resolve_token(env={"RAY_AUTH_TOKEN": "abc\x07def"})
    assert err.value.field == "RAY_AUTH_TOKEN" and "abc" not in str(err.value)


def test_an_error_that_quotes_the_token_is_scrubbed():
    from cluster.jobs import _guard

    def leaky():
        raise ValueError("Invalid header value b'Bearer s3cr3t-token'")

    with pytest.raises(ClusterError) as err:
        _guard(leaky, address="http://head:8265", what="connect", token="s3cr3t-token")
    assert "s3cr3t" not in str(err.value) and "Bearer <token>" in str(err.value)


def test_an_explicit_address_wins_over_rays_address_variables(monkeypatch):
    """Ray's job client lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is given: the token
    would go to that host. Two local servers record who is asked."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cluster.jobs import job_status

    asked = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append((self.server.server_port, self.headers.get("Authorization")))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Recorder) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    named, other = (f"http://127.0.0.1:{s.server_port}" for s in servers)
    monkeypatch.setenv("RAY_ADDRESS", other)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", other)
    try:
        with pytest.raises(ClusterError):
            job_status(address=named, job_id="raysubmit_1", token="t0k")
    finally:
        for server in servers:
            server.shutdown()
    assert asked and {port for port, _ in asked} == {servers[0].server_port}, asked
    assert all(auth == "Bearer t0k" for _, auth in asked)
    import os

    assert os.environ["RAY_ADDRESS"] == other  # set aside only while the client resolved its address
