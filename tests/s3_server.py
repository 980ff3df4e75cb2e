"""A real S3-protocol server on localhost (moto's) for the object-storage tests.

moto keeps the buckets in this process's memory and the HTTP server only serves them, so stopping the server and
starting it again on the same port is a storage outage that loses nothing. moto is installed by the Makefile with
--no-deps, not through the dev extra: botocore pins python-dateutil<3 and the kubernetes client needs >=3 (moto
runs fine with it, pip cannot resolve both).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field


@dataclass
class S3Server:
    bucket: str = "sweeps"
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, kept across stop() and start()
    _server: object = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What points pyarrow and boto (here, in subprocesses and in Ray workers) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,  # FileSystem.from_uri honours it; a bare S3FileSystem() does not
            "AWS_EC2_METADATA_DISABLED": "true",
            # The SDKs' default aws-chunked uploads (with trailing checksums) are not decoded by moto.
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }

    def uri(self, *parts: str) -> str:
        """A fresh prefix in the bucket (s3://bucket/<random>/parts...): tests sharing the server never meet."""
        return "/".join([f"s3://{self.bucket}", uuid.uuid4().hex[:12], *parts])

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=f"{self.host}:{self.port}",
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused); the objects stay for the next start()."""
        if self._server is not None:
            self._server.stop()
            self._server = None


def start_s3_server(bucket: str = "sweeps") -> S3Server:
    """A started server holding an empty `bucket`; the caller stops it."""
    server = S3Server(bucket=bucket).start()
    server.filesystem().create_dir(bucket)
    return server


@dataclass
class AuthenticatingS3:
    """moto's server in a process of its own that checks every request's signature and IAM policy: one user
    (`key_id`, `secret`) may use S3. Requests signed with another secret are refused."""

    endpoint: str
    bucket: str
    key_id: str
    secret: str
    _proc: object = field(default=None, repr=False)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=30)


def start_authenticating_s3(bucket: str = "private") -> AuthenticatingS3:
    """Start `moto_server` with authentication on after the three set-up calls (user, key, policy)."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    setup = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "x",
        "aws_secret_access_key": "x",
    }
    iam = boto3.client("iam", **setup)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)
    iam.create_user(UserName="zerotune")
    key = iam.create_access_key(UserName="zerotune")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="zerotune", PolicyName="s3", PolicyDocument=json.dumps(policy))
    creds = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    boto3.client("s3", **{**setup, **creds}).create_bucket(Bucket=bucket)
    return AuthenticatingS3(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"], proc)
