"""A tiny stand-in for the Kubernetes API server (and for what the KubeRay operator and the Ray autoscaler do
to a RayCluster's pods): real HTTP on 127.0.0.1, in a thread.

It serves exactly what cluster/kube.py calls (GET/PATCH one RayCluster, list pods by label), records every
request (method, path, query, headers, JSON body) and applies JSON patches (RFC 6902 add/replace/remove/test)
so a later GET sees the change. Errors are answered as the API server does (k8s.io/apiserver handlers/patch.go
and apimachinery errors.go): a patch that cannot apply (failed `test`, missing path) is HTTP 422 with the generic
message and no causes; a patched object that breaks the CRD's schema (the vendored v1.6.2 openAPIV3Schema) is
HTTP 422 `Invalid` naming the fields.

`reconcile` does what KubeRay's reconcilePods does to worker pods (ray-operator raycluster_controller.go,
v1.6.2): delete the pods named in scaleStrategy.workersToDelete, create pods up to replicas clamped to
[minReplicas, maxReplicas], and delete surplus pods at random only when autoscaling is off. `autoscaler_idle`
does what the Ray autoscaler does once workers have been idle for idleTimeoutSeconds: lower replicas to what
stays (never below minReplicas) and name the idle pods in workersToDelete.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

RAYCLUSTER_PATH = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayclusters/([^/]+)$")
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
SCHEMA = Path(__file__).resolve().parents[1] / "k8s" / "schemas" / "v1.6.2" / "raycluster.v1.json"
PATCH_NOT_APPLIED = "the server rejected our request due to an error in our request"


class FakeKubeAPI:
    def __init__(self, *, rayclusters: list[dict], pods: list[dict]):
        self.rayclusters = {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in rayclusters}
        self.pods = copy.deepcopy(pods)
        self.requests: list[dict] = []
        self._ips = itertools.count(10)
        self._lock = threading.Lock()
        self._validator = None
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

    def workers(self, namespace: str, name: str) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self.pods
            if p["metadata"]["labels"].get("ray.io/cluster") == name
            and p["metadata"]["namespace"] == namespace
            and p["metadata"]["labels"].get("ray.io/node-type") == "worker"
        )

    # --- what the operator and the autoscaler do -------------------------------------------
    def reconcile(self, namespace: str, name: str) -> None:
        rc = self.rayclusters[(namespace, name)]
        autoscaling = bool(rc["spec"].get("enableInTreeAutoscaling"))
        for group in rc["spec"]["workerGroupSpecs"]:
            doomed = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
            self.pods = [p for p in self.pods if p["metadata"]["name"] not in doomed]  # always, even if unknown
            members = [p for p in self.pods if p["metadata"]["labels"].get("ray.io/group") == group["groupName"]]
            low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
            desired = min(max(group.get("replicas", 0), low), high)
            for _ in range(desired - len(members)):
                ip = next(self._ips)
                self.pods.append(
                    worker_pod(f"{name}-{group['groupName']}-new{ip}", cluster=name, group=group["groupName"], ip=ip)
                )
            if len(members) > desired and not autoscaling:  # random deletion, only without the autoscaler
                gone = {p["metadata"]["name"] for p in members[: len(members) - desired]}
                self.pods = [p for p in self.pods if p["metadata"]["name"] not in gone]

    def autoscaler_idle(self, namespace: str, name: str, idle: set[str]) -> None:
        rc = self.rayclusters[(namespace, name)]
        for group in rc["spec"]["workerGroupSpecs"]:
            members = [
                p["metadata"]["name"]
                for p in self.pods
                if p["metadata"]["labels"].get("ray.io/group") == group["groupName"]
            ]
            removable = [n for n in members if n in idle][: max(0, len(members) - group.get("minReplicas", 0))]
            if removable:
                group["replicas"] = len(members) - len(removable)
                group["scaleStrategy"] = {"workersToDelete": removable}
        self.reconcile(namespace, name)

    # --- request handling -------------------------------------------------------------
    def _validate(self, obj: dict) -> list[dict]:
        import jsonschema

        if self._validator is None:
            self._validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())["openAPIV3Schema"])
        causes = []
        for error in self._validator.iter_errors(obj):
            field = ".".join(f"[{p}]" if isinstance(p, int) else p for p in error.path).replace(".[", "[")
            causes.append({"reason": "FieldValueInvalid", "message": f"Invalid value: {error.message}", "field": field})
        return causes

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
                except (KeyError, IndexError, ValueError):
                    return self._reply(422, _status(422, "Invalid", PATCH_NOT_APPLIED))
                if causes := api._validate(patched):
                    message = f'RayCluster.ray.io "{m[2]}" is invalid: ' + ", ".join(
                        f"{c['field']}: {c['message']}" for c in causes
                    )
                    return self._reply(422, _status(422, "Invalid", message, kind="RayCluster", causes=causes))
                api.rayclusters[(m[1], m[2])] = patched
                return self._reply(200, patched)

        return Handler


def _status(code: int, reason: str, message: str, *, kind: str = "", causes: list | None = None) -> dict:
    details = {"group": "ray.io", "kind": kind, "causes": causes} if causes else {}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
    }


def worker_pod(name: str, *, cluster: str, group: str, ip: int, phase: str = "Running", gpus: int = 0) -> dict:
    """A worker pod as KubeRay labels it; Pending ones have no IP and are not Ready."""
    limits = {"cpu": "8", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    running = phase == "Running"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "zerotune",
            "labels": {"ray.io/cluster": cluster, "ray.io/node-type": "worker", "ray.io/group": group},
        },
        "spec": {"containers": [{"name": "ray-worker", "image": "x", "resources": {"limits": limits}}]},
        "status": {
            "phase": phase,
            **({"podIP": f"10.0.0.{ip}"} if running else {}),
            "conditions": [{"type": "Ready", "status": "True" if running else "False"}],
        },
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
                raise ValueError(f"testing value {op['path']} failed: test failed")
        elif op["op"] in ("replace", "add"):
            if op["op"] == "replace":
                node[key]  # must exist
            node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc
