"""A real HTTP server on localhost that answers the Hugging Face hub endpoints `zerotune push` uses (create a repo,
a branch, validate the card's metadata, preupload, commit) the way the hub documents them, and records every
request: what huggingface_hub would send to the hub, checked without a network. Every file is answered "regular"
(inline in the commit), so no LFS or Xet transfer is involved."""

from __future__ import annotations

import base64
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Hub:
    url: str
    requests: list[dict] = field(default_factory=list)
    refuse_with: int | None = None  # answer every request with this HTTP status (e.g. 401)

    def posts(self, suffix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and re.search(suffix, r["path"])]

    def committed_files(self) -> dict[str, bytes]:
        """path in repo -> content, of the commits' inline files."""
        out = {}
        for commit in self.posts(r"/commit/"):
            for item in commit["ndjson"]:
                if item["key"] == "file":
                    out[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return out


@contextmanager
def hub_server():
    hub = Hub(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: pytest shows what the assertions need
            pass

        def do_GET(self):
            self._answer()

        def do_POST(self):
            self._answer()

        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry = {"method": self.command, "path": self.path, "headers": headers, "body": body}
            if self.headers.get("Content-Type", "").startswith("application/x-ndjson"):
                entry["ndjson"] = [json.loads(line) for line in body.splitlines() if line.strip()]
            elif body:
                entry["json"] = json.loads(body)
            hub.requests.append(entry)
            if hub.refuse_with:
                return self._send(hub.refuse_with, {"error": "Invalid credentials in Authorization header"})
            status, reply = _route(hub.url, self.command, self.path.split("?")[0], entry)
            self._send(status, reply)

        def _send(self, status: int, reply: dict):
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


def _route(base: str, method: str, path: str, entry: dict) -> tuple[int, dict]:
    if method == "POST" and path == "/api/repos/create":
        sent = entry["json"]
        repo = f"{sent['organization']}/{sent['name']}" if sent.get("organization") else sent["name"]
        return 200, {"url": f"{base}/{repo}", "name": repo}
    if method == "POST" and path == "/api/validate-yaml":
        return _validate_yaml(entry["json"]["content"])
    m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(branch|preupload|commit)/(.+)", path)
    if method == "POST" and m:
        repo, what, revision = m.groups()
        if what == "branch":
            return 200, {}
        if what == "preupload":
            files = entry["json"]["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        return 200, {"commitUrl": f"{base}/{repo}/commit/{'c0ffee' * 6}abcd", "commitOid": f"{'c0ffee' * 6}abcd"}
    return 404, {"error": f"no route {method} {path}"}


def _validate_yaml(content: str) -> tuple[int, dict]:
    """The hub's metadata check, as far as this server can do it: the README's front matter is a YAML mapping."""
    import yaml

    match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as exc:
        return 400, {"errors": [{"message": f"invalid YAML: {exc}"}]}
    if not isinstance(meta, dict):
        return 400, {"errors": [{"message": "no metadata block"}]}
    return 200, {"errors": [], "warnings": []}
