"""What Ray on the cluster says, through its dashboard address with token auth (the address
`kubectl port-forward` gives): which worker pods are idle, and whether the results path is writable.

- `idle_worker_pods`: Ray's State API (`/api/v0/nodes|actors|tasks`, what `ray list` reads) mapped to
  pods by IP. A pod is idle when Ray lists its node ALIVE with no live actor and no running task; a pod
  Ray does not list is not called idle (it may be joining), so it is never deleted on that ground.
- `check_results_writable`: a tiny Ray job on the head (submitted through cluster/jobs.py) that writes,
  reads back and deletes a probe file under the results path: pods being Ready says nothing about
  whether the Ray user (uid 1000, gid 100) may write an NFS-style volume, which ignores fsGroup.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import urllib.error
import urllib.request

from cluster import jobs
from zerotune.errors import ClusterError

PROBE_MARK = "ZEROTUNE_PROBE "
# Runs on the head with the image's Python; the path defaults to the head's $ZEROTUNE_RESULTS (k8s/base).
PROBE_SCRIPT = """
import json, os, sys, uuid
target = sys.argv[1] or os.environ.get("ZEROTUNE_RESULTS", "")
out = {"path": target, "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups())}
try:
    if not target:
        raise LookupError("no results path: ZEROTUNE_RESULTS is not set on the head")
    if "://" in target:
        from pyarrow import fs
        filesystem, base = fs.FileSystem.from_uri(target)
        probe = base.rstrip("/") + "/.zerotune-probe-" + uuid.uuid4().hex
        with filesystem.open_output_stream(probe) as f:
            f.write(b"ok")
        with filesystem.open_input_stream(probe) as f:
            assert f.read() == b"ok", "read back something else"
        filesystem.delete_file(probe)
    else:
        probe = os.path.join(target, ".zerotune-probe-" + uuid.uuid4().hex)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        with open(probe, "rb") as f:
            assert f.read() == b"ok", "read back something else"
        os.remove(probe)
    out["ok"] = True
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
    if "://" not in target and os.path.isdir(target):
        st = os.stat(target)
        out["owner"], out["mode"] = f"{st.st_uid}:{st.st_gid}", oct(st.st_mode & 0o7777)
print("ZEROTUNE_PROBE " + json.dumps(out), flush=True)
sys.exit(0 if out.get("ok") else 3)
"""
VOLUME_FIX = (
    "NFS-style ReadWriteMany volumes ignore fsGroup: provision the volume writable by uid 1000 / gid 100 "
    '(EKS: an EFS access-point StorageClass with uid "1000", gid "100"; AKS: azurefile-csi, or mountOptions '
    "uid=1000,gid=100; GKE Filestore: make the share's root group-writable by gid 100 once), or use the "
    "s3-results overlay; see the README's storage table"
)
OBJECT_STORE_FIX = (
    "check the Secret zerotune-s3 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for "
    "non-AWS stores, ZEROTUNE_RESULTS=s3://BUCKET/PREFIX) and that its key may write that prefix"
)


def probe_entrypoint(path: str | None = None) -> str:
    """The probe's job entrypoint: `python -c SCRIPT PATH` (empty PATH: the head's $ZEROTUNE_RESULTS)."""
    return shlex.join(["python", "-c", PROBE_SCRIPT, path or ""])


def check_results_writable(*, address: str, token: str | None, path: str | None = None, timeout_s: float = 180) -> dict:
    """Write, read back and delete a file under the results path as the head's Ray user; ClusterError if not."""
    with tempfile.TemporaryDirectory(prefix="zerotune-probe-") as empty:  # nothing of this machine is uploaded
        job_id = jobs.submit(
            address=address,
            entrypoint=probe_entrypoint(path),
            token=token,
            working_dir=empty,
            metadata={"zerotune": "storage-probe"},
        )
    status = jobs.wait_for_job(address=address, job_id=job_id, token=token, timeout_s=timeout_s, poll_s=1.0)
    logs = jobs.job_logs(address=address, job_id=job_id, token=token)
    lines = [line for line in logs.splitlines() if line.startswith(PROBE_MARK)]
    if not lines:
        raise ClusterError(
            f"the storage probe job {job_id} ended {status['status']} without a result: {logs.strip()[-500:]}",
            fix=f"see `zerotune job logs {job_id} --address {address}`",
        )
    result = json.loads(lines[-1][len(PROBE_MARK) :])
    if not result.get("ok"):
        where = result.get("path") or "(unset)"
        seen = f" (owner {result['owner']}, mode {result['mode']})" if "owner" in result else ""
        user = f"uid {result.get('uid')}, gid {result.get('gid')}"
        raise ClusterError(
            f"the Ray user on the head ({user}) cannot write the results path {where}{seen}: {result.get('error')}",
            field="storage",
            fix=OBJECT_STORE_FIX if "://" in where else VOLUME_FIX,
        )
    return result | {"job_id": job_id}


def _state(address: str, token: str | None, resource: str, **filters: str) -> list[dict]:
    query = "detail=true&limit=10000&timeout=30"
    for key, value in filters.items():
        query += f"&filter_keys={key}&filter_predicates=%3D&filter_values={value}"
    request = urllib.request.Request(
        f"{address.rstrip('/')}/api/v0/{resource}?{query}",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        refused = exc.code in (401, 403)
        raise ClusterError(
            f"Ray's State API at {address} answered HTTP {exc.code} ({resource})",
            field="token" if refused else "address",
            fix=jobs.TOKEN_FIX if refused else jobs.DASHBOARD_FIX,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClusterError(
            f"cannot reach the Ray dashboard at {address}: {getattr(exc, 'reason', exc)}",
            field="address",
            fix=jobs.DASHBOARD_FIX,
        ) from None
    return ((body.get("data") or {}).get("result") or {}).get("result") or []


def idle_worker_pods(*, address: str, token: str | None, pods: list[dict]) -> set[str]:
    """Names of the worker pods whose Ray node is ALIVE with no live actor and no running task."""
    nodes = [n for n in _state(address, token, "nodes") if n.get("state") == "ALIVE"]
    if not any(n.get("is_head_node") for n in nodes):
        # Right after a head (re)start the dashboard lists no nodes yet: an empty list means "unknown".
        raise ClusterError(
            f"Ray at {address} lists no live head node yet: its view of the workers is not ready",
            fix="run the command again in a minute",
        )
    busy = {a.get("node_id") for a in _state(address, token, "actors", state="ALIVE")}
    busy |= {t.get("node_id") for t in _state(address, token, "tasks", state="RUNNING")}
    idle_ips = {n.get("node_ip") for n in nodes if n.get("node_id") not in busy}
    return {
        (p.get("metadata") or {}).get("name")
        for p in pods
        if (p.get("status") or {}).get("podIP") in idle_ips and (p.get("status") or {}).get("phase") == "Running"
    }
