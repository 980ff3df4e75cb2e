"""A whole sweep on object storage: a real S3-protocol server (moto's, tests/s3_server.py), `storage.path` and
`data.path` both s3:// URIs, on a private token-auth Ray head whose processes get the credentials from their
environment (as the KubeRay s3-results overlay's Secret gives them), never from a URI.

ONE sweep (tiny BERT, k=2, one fixed trial of 4 epochs, one worker, ZeRO 0, then a refit), through three runs of
the same command:
1. `sweep run --address HEAD`, its driver SIGKILLed once the first trial has recorded fold 0;
2. the same command; once the resumed trial is training, the S3 server stops (an outage; moto keeps the objects):
   the run ends with exit 3 and a storage error naming the fix;
3. the server back, the same sweep submitted as a Ray job (`zerotune job submit`): it resumes and finishes, refit and
   export included.
Then `sweep status`, `report` and `predict` read it from S3, and every object stored, every line printed and Ray's
session logs are searched for the secret key.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tiny_models import sweep_raw

pytestmark = pytest.mark.integration
NAME, K = "s3-sweep", 2
# ONE trial: what the test is about is its runs, not a search. Its 4 epochs per fold keep its workers busy past the
# driver's kill (Ray ends a dead driver's workers within a second or two, while a 1-epoch fold takes about that).
POINT = {"learning_rate": 3e-3, "batch_size": 4, "epochs": 4}


def _objects(s3, prefix: str) -> dict[str, object]:
    """Every object under an s3:// prefix (path inside the bucket -> pyarrow FileInfo)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(prefix.removeprefix("s3://"), recursive=True, allow_not_found=True)
    infos = s3.filesystem().get_file_info(selector)
    return {i.path: i for i in infos if i.type == pafs.FileType.File}


def _wait_for(what: str, found, proc: subprocess.Popen, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = found()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout_s} s")


def _records(s3, root: str, name: str) -> list[str]:
    return sorted(p for p in _objects(s3, f"{root}/{NAME}/trials") if p.endswith(name))


def _starts(s3, root: str, trial: str) -> list[dict]:
    """The trial's fold start markers (trainer.records), oldest first."""
    fs, prefix = s3.filesystem(), f"{root}/{NAME}/trials/{trial}/records/starts/".removeprefix("s3://")
    markers = [p for p in _objects(s3, "s3://" + prefix) if p.endswith(".json")]
    markers.sort(key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
    return [json.loads(fs.open_input_stream(p).read()) for p in markers]


@pytest.fixture(scope="module")
def s3_sweep(tmp_path_factory, tiny_bert_dir, keyword_csv, s3_server):
    from cluster import jobs
    from token_head import token_head

    tmp = tmp_path_factory.mktemp("s3-sweep")
    work = tmp / "job"  # what `zerotune job submit` uploads: the sweep file only
    work.mkdir()
    secret = "zt-secret-" + secrets.token_hex(12)  # moto accepts any key: this one must show up nowhere
    # AWS_MAX_ATTEMPTS (honoured by trainer.storage): the outage is noticed in a second, not after pyarrow's ~6 s of
    # retries per call, as a deployment that wants a dead store noticed quickly would set it.
    creds = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": secret, "AWS_MAX_ATTEMPTS": "3"}
    root, data = s3_server.uri("results"), s3_server.uri("data", "keywords.csv")
    with s3_server.filesystem().open_output_stream(data.removeprefix("s3://")) as out:
        out.write(keyword_csv.read_bytes())
    raw = sweep_raw(tiny_bert_dir, data, root, name=NAME)
    raw["search"] = {
        **raw["search"],
        "space": {**raw["search"]["space"], "epochs": {"low": 1, "high": 4}},
        "num_trials": 1,
        "initial_points": [POINT],
        "scheduler": {"type": "none"},
        "max_concurrent_trials": 1,
    }
    raw["scaling"], raw["deepspeed"] = {"num_workers": 1}, {"zero_stage": 0}
    raw["folds"] = {"k": K, "test_fraction": 0.2}
    raw["storage"] = {**raw["storage"], "checkpoint_every_epoch": True}
    (work / "sweep.yaml").write_text(yaml.safe_dump(raw))
    out = {"root": root, "data": data, "secret": secret, "printed": []}
    with token_head(num_cpus=3, worker_env=creds) as head:
        env = {**os.environ, **creds, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head["token"], "HOME": str(tmp)}
        env.pop("RAY_ADDRESS", None)
        run = [sys.executable, "-m", "sweeps", "sweep", "run", str(work / "sweep.yaml"), "--address", head["gcs"]]

        def start() -> subprocess.Popen:
            return subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def cli(*args: str) -> subprocess.CompletedProcess:
            done = subprocess.run([sys.executable, "-m", "sweeps", *args], env=env, capture_output=True, text=True)
            out["printed"] += [done.stdout, done.stderr]
            return done

        procs = []
        try:
            # 1. The driver SIGKILLed once the first trial has recorded fold 0.
            t0 = time.monotonic()
            procs.append(start())
            fold0 = _wait_for("fold 0's record", lambda: _records(s3_server, root, "fold-0.json"), procs[-1])[0]
            procs[-1].send_signal(signal.SIGKILL)
            out["printed"] += list(procs[-1].communicate(timeout=60))
            out["times"] = {"killed": time.monotonic() - t0}
            out["killed"] = killed = fold0.split("/trials/")[1].split("/")[0]
            out["fold0"] = s3_server.filesystem().get_file_info(fold0).mtime
            time.sleep(3)  # the dead driver's workers are ended by Ray meanwhile
            out["starts_at_kill"] = _starts(s3_server, root, killed)

            # 2. The same command; once it trains the killed trial again, the storage goes away.
            procs.append(start())
            _wait_for(
                "the resumed trial",
                lambda: len(_starts(s3_server, root, killed)) > len(out["starts_at_kill"]),
                procs[-1],
            )
            out["before_outage"] = {p: i.size for p, i in _objects(s3_server, root).items()}
            s3_server.stop()
            stopped = time.monotonic()
            try:
                stdout, stderr = procs[-1].communicate(timeout=240)
            finally:
                s3_server.start()
            out["outage"] = {"returncode": procs[-1].returncode, "stderr": stderr, "stop_s": time.monotonic() - stopped}
            out["printed"] += [stdout, stderr]
            out["after_outage"] = {p: i.size for p, i in _objects(s3_server, root).items()}
            out["times"]["outage_run_ended"] = time.monotonic() - t0

            # 3. Storage back: the same sweep as a Ray job finishes it.
            submitted = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sweeps",
                    "job",
                    "submit",
                    "sweep.yaml",
                    "--address",
                    head["address"],
                    "--format",
                    "json",
                ],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert submitted.returncode == 0, submitted.stderr[-2000:]
            job_id = json.loads(submitted.stdout.strip().splitlines()[-1])["job_id"]
            token = head["token"]
            out["job"] = jobs.wait_for_job(address=head["address"], job_id=job_id, token=token, timeout_s=600)
            out["job_logs"] = jobs.job_logs(address=head["address"], job_id=job_id, token=token)
            out["printed"] += [submitted.stdout, submitted.stderr, out["job_logs"], json.dumps(out["job"])]
            out["times"]["job_ended"] = time.monotonic() - t0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        out["status"] = cli("sweep", "status", NAME, "--storage", root, "--format", "json")
        out["report"] = cli("report", NAME, "--storage", root, "--format", "md")
        out["predictions"] = tmp / "predictions.csv"
        out["predict"] = cli("predict", f"{root}/{NAME}", "--input", data, "--output", str(out["predictions"]))
        logs = sorted(p for p in Path(head["temp"]).rglob("*") if p.is_file() and "/logs/" in str(p))
        out["ray_logs"] = {str(p): p.read_bytes() for p in logs}
    out["stored"] = {p: s3_server.filesystem().open_input_stream(p).read() for p in _objects(s3_server, root)}
    print(f"s3 sweep timings (s from the first run's start): {out['times']}")
    return out


def test_the_sweep_survives_a_driver_kill_and_an_outage_and_finishes_on_s3(s3_sweep, s3_server):
    job = s3_sweep["job"]
    assert job["status"] == "SUCCEEDED", s3_sweep["job_logs"][-3000:]
    root, stored = s3_sweep["root"], s3_sweep["stored"]
    sweep = f"{root}/{NAME}".removeprefix("s3://")
    summary = json.loads(stored[f"{sweep}/summary.json"])
    assert summary["states"]["completed"] == 1 == len(summary["trials"]), summary["states"]
    assert json.loads(stored[f"{sweep}/data.json"])["n_rows"] == 240  # read from data.path on S3
    assert json.loads(stored[f"{sweep}/config.json"])["data"]["path"] == s3_sweep["data"]
    # The killed trial: fold 0, recorded before the kill, never ran again (its record is the one written then);
    # fold 1 started again in the outage run and in the run that finished it.
    killed = s3_sweep["killed"]
    assert (
        s3_server.filesystem().get_file_info(f"{sweep}/trials/{killed}/records/fold-0.json").mtime
        == (s3_sweep["fold0"])
    )
    at_kill = [s["fold"] for s in s3_sweep["starts_at_kill"]]
    assert at_kill in ([0], [0, 1]), at_kill
    folds = [s["fold"] for s in _starts(s3_server, root, killed)]
    after = folds[len(at_kill) :]
    assert folds[: len(at_kill)] == at_kill and 0 not in after and len(after) >= 2, (folds, s3_sweep["times"])
    # Ray Train's storage: each trial's checkpoints, with their state and engine manifest, on S3.
    for trial in summary["trials"]:
        fit = f"{sweep}/trials/{trial['trial_id']}/fit/"
        assert any(p.startswith(fit + "checkpoint_") and p.endswith("/state.json") for p in stored), fit
        assert any(p.startswith(fit + "checkpoint_") and p.endswith("/engine-rank0.json") for p in stored), fit
    # The refit: latest.json names the run, whose exported model is on S3.
    refit = json.loads(stored[f"{sweep}/refit/latest.json"])["run"]
    assert f"{sweep}/refit/{refit}/model/config.json" in stored and f"{sweep}/refit/{refit}/metrics.json" in stored
    assert summary["best"]["params"] == POINT


def test_a_storage_outage_ends_the_run_with_a_storage_error_and_loses_nothing(s3_sweep):
    outage = s3_sweep["outage"]
    assert outage["returncode"] == 3, outage["stderr"][-3000:]
    lines = [line for line in outage["stderr"].splitlines() if line.startswith(("error:", "  fix:"))]
    sweep = f"{s3_sweep['root']}/{NAME}"
    assert lines[0].startswith(f"error: storage.path: the sweep directory {sweep} became unreachable"), lines
    assert "run the same command again to resume" in lines[1]
    assert [line for line in lines if line.startswith("error:")] == lines[:1]  # one error: the storage's
    before, after = s3_sweep["before_outage"], s3_sweep["after_outage"]
    # Nothing written before the outage is gone, and records (written once) are whole. Checkpoints are left out:
    # Ray Train deletes all but the latest two as it goes, so one may go between the listing and the stop. (The
    # run's state files, pending.json and Tune's experiment state, may be replaced, each whole, until then.)
    kept = [p for p in before if "/checkpoint_" not in p]
    assert [p for p in kept if p not in after] == []
    records = {p: before[p] for p in kept if "/records/" in p}
    assert records and {p: after[p] for p in records} == records
    assert outage["stop_s"] < 180


def test_status_report_and_predict_read_the_sweep_from_s3(s3_sweep):
    import pandas as pd

    status = s3_sweep["status"]
    assert status.returncode == 0, status.stderr[-2000:]
    assert {t["state"] for t in json.loads(status.stdout)["trials"]} == {"completed"}
    report = s3_sweep["report"]
    assert report.returncode == 0, report.stderr[-2000:]
    sweep = f"{s3_sweep['root']}/{NAME}".removeprefix("s3://")
    assert "## " in s3_sweep["stored"][f"{sweep}/report/report.md"].decode()
    predict = s3_sweep["predict"]
    assert predict.returncode == 0, predict.stderr[-2000:]
    rows = pd.read_csv(s3_sweep["predictions"])
    assert len(rows) == 240 and set(rows["label"]) <= {"negative", "neutral", "positive"}


def test_the_secret_key_appears_in_nothing_stored_printed_or_logged(s3_sweep):
    secret = s3_sweep["secret"].encode()
    sweep = f"{s3_sweep['root']}/{NAME}".removeprefix("s3://")
    stored, logs = s3_sweep["stored"], s3_sweep["ray_logs"]
    assert f"{sweep}/summary.json" in stored and f"{sweep}/tune/tuner.pkl" in stored  # the search saw the sweep
    assert [p for p, data in stored.items() if secret in data] == []
    assert [p for p, data in logs.items() if secret in data] == []
    assert any(sweep.encode() in data for data in logs.values())  # the logs searched are the ones of this sweep
    assert [i for i, text in enumerate(s3_sweep["printed"]) if s3_sweep["secret"] in (text or "")] == []
    assert s3_sweep["secret"] not in s3_sweep["job"]["entrypoint"]
