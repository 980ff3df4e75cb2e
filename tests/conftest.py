"""Shared fixtures: offline Hugging Face, tiny real models, one local Ray cluster per session."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train's controller polls its workers every 2 s by default: each fit waits on that at start and
# end. Polling faster costs a little CPU and saves ~2.5 s per fit (tests run ~30 fits).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.3")
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
VADER = REPO / "examples" / "data" / "vader"  # the VADER sentences (MIT), in the repository


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from tiny_models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from tiny_models import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def keyword_csv(tmp_path_factory) -> Path:
    """A small, learnable classification set: the label is which word the sentence carries."""
    from tiny_models import keyword_rows

    path = tmp_path_factory.mktemp("data") / "keywords.csv"
    keyword_rows().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def s3_server():
    """ONE real S3-protocol server (moto's) on localhost for the session, with an empty bucket: tests take their
    own prefix (`s3_server.uri(...)`) and set `s3_server.env` where pyarrow or a subprocess must find it.
    `.endpoint`, `.bucket`; `.stop()` then `.start()` is an outage on the same port that keeps the objects."""
    from s3_server import start_s3_server

    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def ray_local():
    """A local Ray cluster (2 CPUs for workers + 1 for trial drivers), shut down after the test."""
    import ray

    from cluster.local import connect

    connect(num_cpus=3)
    yield
    ray.shutdown()


HEAD_USERS = ("ray_head", "tiny_sweep")
HEAD_KEY = pytest.StashKey[dict]()


def pytest_collection_modifyitems(config, items):
    users = [i for i in items if any(f in getattr(i, "fixturenames", ()) for f in HEAD_USERS)]
    config.stash[HEAD_KEY] = {"last_user": users[-1].nodeid if users else None, "stack": None}


def pytest_runtest_teardown(item, nextitem):
    # An idle head still costs ~6 % of this 2-core machine: stop it after the last test that needs it.
    state = item.config.stash.get(HEAD_KEY, None)
    if state and state["stack"] is not None and item.nodeid == state["last_user"]:
        state["stack"].close()
        state["stack"] = None


def pytest_sessionfinish(session):
    state = session.config.stash.get(HEAD_KEY, None)
    if state and state["stack"] is not None:
        state["stack"].close()


@pytest.fixture(scope="session")
def ray_head(request, tmp_path_factory):
    """ONE private Ray head with token auth (jobs tests and the shared tiny sweep), stopped after its last user.

    3 CPUs: a trial's 2 workers plus the trial drivers' sliver, as the embedded cluster has. Its workers get
    the shared sweep's faults (tiny_models.sweep_faults: a simulated memory limit and two worker kills), which
    fire in that sweep's trials only; "sweep_fault_markers" is where the kills leave their marker files.
    """
    from contextlib import ExitStack

    from tiny_models import sweep_faults
    from token_head import token_head

    markers = tmp_path_factory.mktemp("sweep-faults")
    state = request.config.stash.setdefault(HEAD_KEY, {"last_user": None, "stack": None})
    state["stack"] = ExitStack()
    head = state["stack"].enter_context(token_head(num_cpus=3, worker_env=sweep_faults(markers)))
    return {**head, "sweep_fault_markers": markers}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """ONE real `mlflow server` (SQLite backend, artifacts served through it) on localhost for the session, which the
    shared tiny sweep logs to; started at once, `.ready()` waits for it. None where mlflow is not installed (the
    `tracking` extra): the sweep then runs untracked and the tracking tests skip."""
    from importlib.util import find_spec

    from mlflow_server import start_mlflow_server

    if find_spec("mlflow") is None:
        yield None
        return
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_bert_dir, keyword_csv, ray_head, mlflow_server):
    """ONE real tiny sweep shared by the sweep, report and job tests (see tiny_models.sweep_raw): completed,
    pruned, out-of-memory and diverged trials, a trial whose worker is killed twice, then a refit. Submitted as
    users do on a cluster, with `zerotune job submit` to the token-auth head. Returns (config, summary with its
    refit, sweep directory, job)."""
    import json
    import subprocess

    import yaml

    from cluster import jobs
    from sweeps.config import load_config
    from sweeps.layout import SweepDir
    from tiny_models import sweep_raw

    mlflow_uri = mlflow_server.uri if mlflow_server is not None else None
    raw = sweep_raw(tiny_bert_dir, keyword_csv, tmp_path_factory.mktemp("sweep-results"), mlflow_uri=mlflow_uri)
    work = tmp_path_factory.mktemp("sweep-job")
    (work / "sweep.yaml").write_text(yaml.safe_dump(raw))
    address, token = ray_head["address"], ray_head["token"]
    env = {**os.environ, "RAY_AUTH_TOKEN": token, "HOME": str(work)}  # HOME: no ~/.ray/auth_token of this machine
    env.pop("RAY_ADDRESS", None)
    submitted = subprocess.run(
        [sys.executable, "-m", "sweeps", "job", "submit", "sweep.yaml", "--address", address, "--format", "json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    job_id = json.loads(submitted.stdout.strip().splitlines()[-1])["job_id"]
    if mlflow_server is not None:
        mlflow_server.ready()  # it started while the job was submitted; the driver logs to it from its first trial
    status = jobs.wait_for_job(address=address, job_id=job_id, token=token, timeout_s=900, poll_s=2)
    logs = jobs.job_logs(address=address, job_id=job_id, token=token)
    assert status["status"] == "SUCCEEDED", logs[-3000:]
    root = Path(raw["storage"]["path"]) / raw["name"]
    summary = json.loads((root / "summary.json").read_text())
    summary["refit"] = json.loads(Path(SweepDir(str(root)).latest_refit().metrics).read_text())
    job = {
        "id": job_id,
        "status": status,
        "logs": logs,
        "submit_output": submitted.stdout + submitted.stderr,
        "work": work,
    }
    return load_config(raw=raw), summary, root, job


@pytest.fixture(scope="session")
def fault_markers(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def extensions_dir(tmp_path_factory):
    """Where torch would JIT-build C++ extensions for these workers: it must stay empty on CPU."""
    return tmp_path_factory.mktemp("torch-extensions")


@pytest.fixture(scope="session")
def trainer_ray(fault_markers, extensions_dir):
    """One local Ray for the trainer integration modules (fits, methods): a Ray start is ~10 s here."""
    import ray

    from cluster.local import connect

    # Workers inherit the environment of the Ray instance, so the faults are set before it starts; they
    # fire only in fits whose records path contains "/restart/" (the fault tests' fits), once each. Step 20 of
    # epoch 0 is beyond the classifier's epochs (12 steps): only the step-checkpoint fit
    # (tests/trainer/test_steps_integration.py) gets there.
    kills = [f"0:2:3:{fault_markers / 'killed'}", f"0:0:20:{fault_markers / 'killed-mid-epoch'}"]
    faults = {
        "ZEROTUNE_FAULT_ONLY": "/restart/",
        "ZEROTUNE_FAULT_KILL_AT": ",".join(kills),  # mid epoch 2; mid epoch 0
        "TORCH_EXTENSIONS_DIR": str(extensions_dir),
    }
    os.environ.update(faults)
    try:
        connect(num_cpus=3)
    finally:
        for key in faults:
            del os.environ[key]
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world_of_one():
    """torch.distributed (gloo) with this process as the only rank, as DeepSpeed needs; undone afterwards."""
    import torch.distributed as dist

    from trainer.worker import skip_cpu_inference_kernel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    skip_cpu_inference_kernel()
    _forget_groups()  # another module's world of one may have left DeepSpeed holding its destroyed group
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
    _forget_groups()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _forget_groups() -> None:
    """Drop DeepSpeed's handles on a process group: its comm backend and the world group it caches."""
    import deepspeed.comm
    import deepspeed.utils.groups

    deepspeed.comm.comm.cdb = None
    deepspeed.utils.groups._WORLD_GROUP = None
