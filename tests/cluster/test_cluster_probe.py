"""cluster/probe.py without Ray: the storage probe's entrypoint run through a real shell here, and the mapping of
Ray's State API answers (served by a local HTTP server shaped like the dashboard's) to idle pods and errors.
The same code against a real token-auth head: test_probe_integration.py."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from cluster.probe import PROBE_MARK, idle_worker_pods, probe_entrypoint
from zerotune.errors import ClusterError


def _probe(path: str | None, env: dict) -> tuple[int, dict]:
    done = subprocess.run(["sh", "-c", probe_entrypoint(path)], env=env, capture_output=True, text=True, timeout=60)
    line = next(line for line in done.stdout.splitlines() if line.startswith(PROBE_MARK))
    return done.returncode, json.loads(line[len(PROBE_MARK) :])


def test_the_probe_entrypoint_survives_the_shell_and_reads_zerotune_results(tmp_path):
    env = {"PATH": os.environ["PATH"]}
    code, result = _probe(str(tmp_path), env)
    assert code == 0 and result["ok"] and result["path"] == str(tmp_path) and not list(tmp_path.iterdir())
    code, result = _probe(None, {**env, "ZEROTUNE_RESULTS": str(tmp_path)})  # the head's env, as in k8s/base
    assert code == 0 and result["path"] == str(tmp_path)
    code, result = _probe(None, env)
    assert code == 3 and "ZEROTUNE_RESULTS is not set on the head" in result["error"]


NODES = [
    {"node_id": "h", "node_ip": "10.0.0.2", "is_head_node": True, "state": "ALIVE"},
    {"node_id": "a", "node_ip": "10.0.0.3", "is_head_node": False, "state": "ALIVE"},
    {"node_id": "b", "node_ip": "10.0.0.4", "is_head_node": False, "state": "ALIVE"},
    {"node_id": "c", "node_ip": "10.0.0.5", "is_head_node": False, "state": "ALIVE"},
    {"node_id": "d", "node_ip": "10.0.0.6", "is_head_node": False, "state": "DEAD"},
]


@pytest.fixture
def dashboard():
    """Answers /api/v0/{nodes,actors,tasks} as Ray's dashboard does (data.result.result), filters applied."""
    state = {"nodes": NODES, "actors": [{"node_id": "a", "state": "ALIVE"}], "tasks": [], "status": 200, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            state["seen"].append((parts.path, query, self.headers.get("Authorization")))
            rows = state[parts.path.rsplit("/", 1)[-1]]
            for key, value in zip(query.get("filter_keys", []), query.get("filter_values", []), strict=True):
                rows = [r for r in rows if r.get(key) == value]
            body = json.dumps({"result": True, "msg": "", "data": {"result": {"total": len(rows), "result": rows}}})
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["address"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _pod(name: str, ip: str | None, phase: str = "Running") -> dict:
    return {"metadata": {"name": name}, "status": {"phase": phase, **({"podIP": ip} if ip else {})}}


def test_idle_means_alive_in_ray_with_no_actor_and_no_running_task(dashboard):
    dashboard["tasks"] = [{"node_id": "b", "state": "RUNNING"}, {"node_id": "c", "state": "FINISHED"}]
    pods = [
        _pod("w-actor", "10.0.0.3"),  # hosts a live actor (a Train worker, a trial): busy
        _pod("w-task", "10.0.0.4"),  # runs a task: busy
        _pod("w-idle", "10.0.0.5"),  # its only task finished: idle
        _pod("w-dead", "10.0.0.6"),  # Ray has it DEAD: not called idle (the operator replaces unhealthy pods)
        _pod("w-new", "10.0.0.7"),  # not registered with Ray yet: unknown, not idle
        _pod("w-pending", None, "Pending"),  # no IP: scale_plan handles Pending pods itself
    ]
    assert idle_worker_pods(address=dashboard["address"], token="t0k", pods=pods) == {"w-idle"}
    assert {path for path, _, _ in dashboard["seen"]} == {"/api/v0/nodes", "/api/v0/actors", "/api/v0/tasks"}
    assert all(auth == "Bearer t0k" for _, _, auth in dashboard["seen"])


def test_an_empty_or_refused_ray_view_is_an_error_not_everything_idle(dashboard):
    dashboard["nodes"] = []  # right after a head start the dashboard lists nothing yet
    with pytest.raises(ClusterError, match="no live head node yet"):
        idle_worker_pods(address=dashboard["address"], token="t", pods=[_pod("w", "10.0.0.3")])
    dashboard["status"] = 401
    with pytest.raises(ClusterError, match="HTTP 401") as err:
        idle_worker_pods(address=dashboard["address"], token="wrong", pods=[])
    assert err.value.field == "token" and "RAY_AUTH_TOKEN" in err.value.fix
