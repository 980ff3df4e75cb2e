"""The environment record: what a sweep, a fit or a refit ran with, so a result can be traced and repeated.

Package versions, CUDA and the GPUs (torch's view, the driver version from nvidia-smi), the git commit of the working
directory, the command line and the effective config. Collected here only; sweeps write it (the file name is
sweeps.layout's), and `zerotune env`, the report and the model card show it through `summary_rows`. Nothing heavy
is imported at module level: `zerotune env` and the CLI's --help stay fast.
"""

from __future__ import annotations

import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# The packages a result depends on, in the order they are shown.
PACKAGES = ("torch", "transformers", "deepspeed", "ray", "optuna", "peft", "huggingface_hub", "zerotune")
NONE = "none"
_PROBE_TIMEOUT_S = 10  # nvidia-smi and git: a hung tool must not hold up a sweep's start


def package_versions() -> dict[str, str]:
    """Python's and each of PACKAGES' installed version ("not installed" when absent), read from package metadata:
    nothing is imported."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def accelerators() -> dict:
    """CUDA (torch's build and runtime), the NVIDIA driver and the GPUs; "none" for each where there is none."""
    cuda, gpus = NONE, []
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        cuda = str(torch.version.cuda)
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return {
        "cuda": cuda,
        "torch_cuda_build": str(torch.version.cuda) if torch is not None and torch.version.cuda else NONE,
        "driver": nvidia_driver() or NONE,
        "gpus": gpus,
    }


def nvidia_driver() -> str | None:
    """The NVIDIA driver version nvidia-smi reports, or None (no nvidia-smi, or it fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    out = _run([smi, "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0].strip() if out else None


def git_state(cwd: str | Path | None = None) -> dict | None:
    """{commit, dirty} of the git work tree at `cwd` (default: the working directory), or None outside one.
    `dirty`: tracked files differ from the commit (untracked files do not count)."""
    where = str(cwd or Path.cwd())
    commit = _run(["git", "-C", where, "rev-parse", "HEAD"]) if shutil.which("git") else None
    if not commit:
        return None
    changed = _run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit.strip(), "dirty": bool(changed and changed.strip())}


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def runtime() -> dict:
    """What one process runs on: host, platform, packages and accelerators (a worker records this in its export)."""
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "accelerators": accelerators(),
    }


def record(*, kind: str, config: dict | None = None, argv: list[str] | None = None, cwd: str | None = None) -> dict:
    """The environment record of a `kind` run (sweep, train, refit, or "current" for `zerotune env`): this process's
    runtime, the git state of `cwd`, the command line (`argv`, default sys.argv) and the effective `config`."""
    argv = list(sys.argv if argv is None else argv)
    return {
        "kind": kind,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **runtime(),
        "cwd": str(cwd or Path.cwd()),
        "git": git_state(cwd),
        "command": shlex.join(argv),
        "config": config,
    }


def with_worker(driver: dict, worker: dict | None) -> dict:
    """A fit's record: the driver's, plus `worker`, the runtime the training workers recorded (their GPUs are the
    ones that trained, the driver may have none)."""
    return {**driver, "worker": worker} if worker else driver


def summary_rows(rec: dict) -> list[tuple[str, str]]:
    """(name, value) rows of a record: packages, CUDA, driver, GPUs, git, command; the training workers' packages
    and GPUs where they were recorded and differ from the driver's."""
    rows = [(name, version) for name, version in rec.get("packages", {}).items()]
    rows += _accelerator_rows(rec.get("accelerators") or {}, prefix="")
    worker = rec.get("worker")
    if worker:
        rows += [
            (f"worker {name}", version)
            for name, version in worker.get("packages", {}).items()
            if rec.get("packages", {}).get(name) != version
        ]
        rows += _accelerator_rows(worker.get("accelerators") or {}, prefix="worker ")
        rows.append(("worker host", str(worker.get("host"))))
    git = rec.get("git")
    rows.append(("git commit", f"{git['commit'][:12]}{' (dirty)' if git['dirty'] else ''}" if git else NONE))
    rows += [("host", str(rec.get("host"))), ("platform", str(rec.get("platform")))]
    if rec.get("command"):
        rows.append(("command", rec["command"]))
    if rec.get("recorded"):
        rows.append(("recorded", f"{rec['recorded']} ({rec.get('kind')})"))
    return rows


def _accelerator_rows(acc: dict, *, prefix: str) -> list[tuple[str, str]]:
    gpus = acc.get("gpus") or []
    shown = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) if gpus else NONE
    return [
        (f"{prefix}cuda", f"{acc.get('cuda', NONE)} (torch build: {acc.get('torch_cuda_build', NONE)})"),
        (f"{prefix}nvidia driver", str(acc.get("driver", NONE))),
        (f"{prefix}gpus", f"{len(gpus)}: {shown}" if gpus else NONE),
    ]
