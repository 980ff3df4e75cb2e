"""A tiny stand-in for the Kubernetes API server: real HTTP on 127.0.0.1, in a thread.

It serves exactly what cluster/kube.py calls (GET/PATCH one RayCluster, list pods by label),
records every request (method, path, query, headers, JSON body) and applies JSON patches
(RFC 6902 add/replace/remove/test) so a later GET sees the change, like the real server.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

RAYCLUSTER_PATH = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayclusters/([^/]+)$")
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")


class FakeKubeAPI:
    def __init__(self, *, rayclusters: list[dict], pods: list[dict]):
        self.rayclusters = {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in rayclusters}
        self.pods = copy.deepcopy(pods)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def methods(self) -> list[str]:
        return [r["method"] for r in self.requests]

    # --- request handling -------------------------------------------------------------
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                entry = {
                    "method": self.command,
                    "path": parts.path,
                    "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw) if raw else None,
                }
                with api._lock:
                    api.requests.append(entry)
                return entry

            def do_GET(self):
                req = self._record()
                if m := RAYCLUSTER_PATH.match(req["path"]):
                    obj = api.rayclusters.get((m[1], m[2]))
                    return (
                        self._reply(200, obj)
                        if obj
                        else self._reply(404, _status(404, "NotFound", f'rayclusters.ray.io "{m[2]}" not found'))
                    )
                if m := PODS_PATH.match(req["path"]):
                    selector = dict(s.split("=", 1) for s in req["query"].get("labelSelector", "").split(",") if s)
                    items = [
                        p
                        for p in api.pods
                        if p["metadata"]["namespace"] == m[1]
                        and selector.items() <= p["metadata"].get("labels", {}).items()
                    ]
                    return self._reply(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                return self._reply(404, _status(404, "NotFound", req["path"]))

            def do_PATCH(self):
                req = self._record()
                m = RAYCLUSTER_PATH.match(req["path"])
                if not m or (m[1], m[2]) not in api.rayclusters:
                    return self._reply(404, _status(404, "NotFound", req["path"]))
                if req["headers"].get("content-type") != "application/json-patch+json":
                    return self._reply(
                        415, _status(415, "UnsupportedMediaType", req["headers"].get("content-type", ""))
                    )
                try:
                    patched = apply_json_patch(api.rayclusters[(m[1], m[2])], req["body"])
                except (KeyError, IndexError, ValueError) as exc:
                    return self._reply(422, _status(422, "Invalid", f"the patch failed: {exc}"))
                api.rayclusters[(m[1], m[2])] = patched
                return self._reply(200, patched)

        return Handler


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, leaf = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(leaf) if isinstance(node, list) else leaf
        if op["op"] == "test":
            if node[key] != op["value"]:
                raise ValueError(f"test failed at {op['path']}: {node[key]!r} != {op['value']!r}")
        elif op["op"] in ("replace", "add"):
            if op["op"] == "replace":
                node[key]  # must exist
            node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc
