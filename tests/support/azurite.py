"""A real Azure Blob endpoint for tests: Azurite's blob service (`make setup` installs it into
.tools) on 127.0.0.1, a free port and a throwaway folder; the process is stopped for sure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from support.anvil import free_port

REPO = Path(__file__).resolve().parents[2]
BUNDLED_AZURITE = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's one built-in account; the key is public (Microsoft documents it for the emulator).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
API_VERSION = "2021-08-06"


@dataclass(frozen=True)
class AzuriteEndpoint:
    url: str  # http://127.0.0.1:PORT, the blob service; accounts are the first path segment

    @property
    def env(self) -> dict[str, str]:
        """The variables object_store reads: emulator mode, pointed at this port."""
        return {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": self.url,  # object_store's default is port 10000
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY,
        }

    def create_container(self, name: str) -> None:
        """Create container `name` (3 to 63 lowercase letters, digits and dashes)."""
        response = httpx.put(
            f"{self.url}/{ACCOUNT}/{name}",
            params={"restype": "container"},
            headers=_signed("PUT", f"/{name}\nrestype:container"),
        )
        if response.status_code != 201:
            raise RuntimeError(f"Azurite: create container {name!r}: {response.text}")


def _signed(verb: str, resource: str) -> dict[str, str]:
    """Headers for a body-less request with a SharedKey signature (Azure's scheme; Azurite
    checks it). `resource` is the canonicalized path after the account, with its query."""
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    # The 11 standard headers are all empty for such a request; the account appears twice
    # because Azurite's URLs are path-style (/account/container).
    to_sign = f"{verb}\n" + "\n" * 11 + canonical_headers + f"/{ACCOUNT}/{ACCOUNT}{resource}"
    key = base64.b64decode(ACCOUNT_KEY)
    signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest())
    return {**headers, "Authorization": f"SharedKey {ACCOUNT}:{signature.decode()}"}


def require_azurite() -> str:
    """The azurite-blob script, or skip the test with a message saying how to get it."""
    if os.access(BUNDLED_AZURITE, os.X_OK) and shutil.which("node"):
        return str(BUNDLED_AZURITE)
    pytest.skip(f"Azurite not found at {BUNDLED_AZURITE} (or no node); run `make setup`")


@contextmanager
def azurite(startup_timeout: float = 60.0) -> Iterator[AzuriteEndpoint]:
    """Azurite's blob service, its blobs in a temporary folder, until the block exits."""
    binary = require_azurite()
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="azurite-") as location,
        tempfile.TemporaryFile() as log,
    ):
        argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", location]
        argv += ["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            endpoint = AzuriteEndpoint(f"http://127.0.0.1:{port}")
            _wait_until_it_answers(proc, endpoint.url, startup_timeout, log)
            yield endpoint
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the node process and anything it spawned
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def _wait_until_it_answers(proc: subprocess.Popen, url: str, timeout: float, log) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"Azurite exited with code {proc.returncode}:\n{output}")
        try:
            httpx.get(f"{url}/{ACCOUNT}?comp=list", timeout=1.0)  # any answer (403) will do
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Azurite did not answer on {url} within {timeout}s") from None
            time.sleep(0.05)
