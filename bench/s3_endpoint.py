"""moto's S3 server as a child process on a free 127.0.0.1 port: the store stage's S3 endpoint.

Its own process, so its request handling does not share the harness's GIL; it logs one line
per request, which `requests()` counts.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from measure import log_tail

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"


class S3EndpointError(RuntimeError):
    """moto's S3 server did not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """`moto_server` on a free 127.0.0.1 port, in its own process (not sharing our GIL)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The variables ampd reads for an S3 data dir, pointing at this endpoint."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    def __enter__(self) -> MotoS3:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/", timeout=2)
                return self
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise S3EndpointError(
                    f"moto_server did not answer on {self.url}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def requests(self) -> int:
        """How many requests moto has logged so far (one line each)."""
        try:
            return self.log_path.read_text(errors="replace").count(" HTTP/1.1")
        except OSError:
            return 0

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        client.create_bucket(Bucket=name)


def moto_version() -> str | None:
    try:
        import moto
    except ImportError:
        return None
    return moto.__version__
