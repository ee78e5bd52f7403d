"""A real S3 endpoint for tests: moto's S3 server on 127.0.0.1, in a thread of this process;
or, checking credentials and signatures, in a process of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    url: str  # http://127.0.0.1:PORT
    access_key: str = "testing"
    secret_key: str = field(default="testing", repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The variables Amp documents, pointing at this endpoint."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, service: str = "s3"):  # noqa: ANN201
        """A boto3 client for this endpoint (S3, or another service moto serves)."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        """Every object in `bucket`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_s3() -> Iterator[S3Endpoint]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@contextmanager
def moto_s3_with_auth(log: Path, buckets: tuple[str, ...] = ()) -> Iterator[S3Endpoint]:
    """moto's server in a process of its own that checks credentials and signatures, as S3
    does (moto accepts anything unless told otherwise). An IAM user with full S3 access and
    `buckets` are created while it still lets everyone in; then authentication is switched
    on (`/moto-api/reset-auth`). The endpoint carries that user's key."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/data.json", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        iam = S3Endpoint(url).client("iam")
        iam.create_user(UserName="ampd")
        iam.put_user_policy(
            UserName="ampd",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="ampd")["AccessKey"]
        endpoint = S3Endpoint(url, key["AccessKeyId"], key["SecretAccessKey"])
        for bucket in buckets:
            endpoint.create_bucket(bucket)
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
