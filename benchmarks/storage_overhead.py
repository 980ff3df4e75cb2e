"""Issue 15's figure: what object storage costs a sweep against a local directory.

The same demo-sized sweep (the demo's config, fewer trials) runs with `storage.path` on a local directory and on
an S3-protocol server (moto's `moto_server`, its own process on localhost), alternately, each a fresh sweep on a
fresh embedded Ray (`zerotune sweep run`, as a user runs it). Wall time is the whole command's; the bytes are what
the sweep directory holds at the end (Ray Train's keep-two retention deletes older checkpoints, so checkpoints
written and deleted are not counted), divided by the fold fits.

    .venv/bin/python -m benchmarks.storage_overhead [--rounds N] [overrides ...]

Writes benchmarks/results/storage_overhead.json. moto on localhost has no network latency or bandwidth limit: the
figure is the client side's cost (pyarrow's S3 calls, uploads through the SDK), a floor for a real object store.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = "examples/classification.chatterbot-topics.yaml"
OVERRIDES = ["search.num_trials=2"]
RESULTS = Path(__file__).with_name("results") / "storage_overhead.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _s3_env(port: int) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",  # moto does not decode aws-chunked uploads
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    }


def _stored_bytes(uri: str) -> tuple[int, int]:
    """(bytes, files) under a sweep directory or prefix."""
    import pyarrow.fs as pafs

    from trainer.storage import filesystem

    fs, path = filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [i for i in infos if i.type == pafs.FileType.File]
    return sum(i.size for i in files), len(files)


def run_once(storage: str, name: str, env: dict, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "sweeps", "sweep", "run", CONFIG, *OVERRIDES, *overrides]
    cmd += [f"storage.path={storage}", f"name={name}", "--format", "json"]
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    stored, files = _stored_bytes(f"{storage}/{name}")
    return {
        "wall_s": round(wall, 1),
        "fold_fits": summary["fold_fits"],
        "stored_bytes": stored,
        "files": files,
        "bytes_per_fold": round(stored / max(1, summary["fold_fits"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for both runs")
    args = parser.parse_args()
    port = _free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    s3 = _s3_env(port)
    try:
        os.environ.update(s3)  # this process reads the stored bytes back
        import pyarrow.fs as pafs

        deadline = time.monotonic() + 30
        while True:
            try:
                pafs.S3FileSystem(
                    endpoint_override=f"127.0.0.1:{port}",
                    scheme="http",
                    access_key="bench",
                    secret_key="bench",
                    region="us-east-1",
                    allow_bucket_creation=True,
                ).create_dir("bench")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        env = {**os.environ, **s3, "HF_HUB_OFFLINE": "1"}
        env.pop("RAY_ADDRESS", None)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs = {"local": [], "s3": []}
        with tempfile.TemporaryDirectory(prefix="zt-storage-bench-") as local:
            for i in range(args.rounds):
                for kind, storage in (("local", local), ("s3", "s3://bench/results")):
                    print(f"round {i + 1}: {kind} ...", flush=True)
                    runs[kind].append(run_once(storage, f"bench-{kind}-{stamp}-{i}", env, args.overrides))
                    print(f"  {runs[kind][-1]}", flush=True)
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    ratios = [s["wall_s"] / loc["wall_s"] for s, loc in zip(runs["s3"], runs["local"], strict=True)]
    result = {
        "command": " ".join(["python -m benchmarks.storage_overhead", f"--rounds {args.rounds}", *args.overrides]),
        "config": CONFIG,
        "overrides": OVERRIDES + args.overrides,
        "runs": runs,
        "wall_ratio_s3_vs_local_median": round(statistics.median(ratios), 3),
        "bytes_per_fold_local": runs["local"][-1]["bytes_per_fold"],
        "bytes_per_fold_s3": runs["s3"][-1]["bytes_per_fold"],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
