"""Object stores (S3, GCS, Azure Blob) behind the `ObjectStore` interface, through obstore.

obstore is the Python binding of the Rust `object_store` crate that Amp itself uses: one
library for the three clouds, credentials and endpoints from the same environment variables
(`AWS_*`, `GOOGLE_*`, `AZURE_*`), multipart uploads for large files, ranged reads, and its
I/O runs outside the GIL. Staging files live on local disk (under TMPDIR) and are uploaded
whole when a file closes: an object appears complete or not at all.
"""

from __future__ import annotations  # `list` is also a method name here

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
import pyarrow as pa
from obstore.exceptions import BaseError, NotFoundError

from ampd.config import BUCKET_NAME
from ampd.storage.staging import StagingArea, StagingFile
from ampd.storage.store import ObjectInfo, ObjectNotFound, ObjectStore, StoreUnavailable

SCHEMES = ("s3", "gs", "az")
# Parts of a multipart upload: object_store's default is 5 MiB, S3's minimum part size.
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
UPLOAD_CONCURRENCY = 4

# Every request to the store: a 5xx answer (S3's 503 SlowDown included), a dropped connection
# or a timeout is retried, up to 10 times in 4 minutes, after 0.1 s, 0.2 s, ... at most 15 s
# with jitter (object_store's backoff). A request that stalls is cut after 60 s in all (an
# 8 MiB part needs only 140 KB/s to make it) and retried; a connect after 5 s. There is no
# per-read timeout: object_store's `read_timeout` also cuts an upload that is merely slow.
# The environment overrides these timeouts with object_store's own keys (AWS_TIMEOUT,
# AWS_CONNECT_TIMEOUT; GOOGLE_* and AZURE_* alike); retries have no such keys.
CLIENT_TIMEOUTS = {"connect_timeout": "5s", "timeout": "60s"}
RETRY_CONFIG = {
    "max_retries": 10,
    "retry_timeout": timedelta(minutes=4),  # object_store: keep under 5 (signatures expire)
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=15)},
}
_ENV_PREFIXES = {"s3": "AWS_", "gs": "GOOGLE_", "az": "AZURE_"}
# object_store's HTTP client keys: obstore reads them from the environment only when it is
# given no client options, so they are carried over here.
_CLIENT_KEYS = (
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "http1_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle", "http2_only", "pool_idle_timeout", "pool_max_idle_per_host",
    "proxy_url", "proxy_ca_certificate", "proxy_excludes", "randomize_addresses",
    "read_timeout", "timeout", "user_agent",
)  # fmt: skip


class CloudStore(ObjectStore):
    """One bucket (or container) and an optional prefix: `s3://bucket/prefix`."""

    def __init__(self, url: str, store: Any, *, staging_root: Path | None = None) -> None:
        self._url = url.rstrip("/")
        self._store = store
        digest = hashlib.sha256(self._url.encode()).hexdigest()[:16]
        root = staging_root or Path(tempfile.gettempdir()) / "ampd-staging"
        self._staging = StagingArea(root / digest)

    def __repr__(self) -> str:
        return f"CloudStore({self._url!r})"

    @property
    def client(self) -> Any:
        """The obstore store under this one (storage/folder.py reads small files with it)."""
        return self._store

    async def put_file(self, local_path: str | os.PathLike, key: str) -> int:
        path = Path(local_path)
        size = path.stat().st_size
        await obstore.put_async(
            self._store,
            _check(key),
            path,
            chunk_size=UPLOAD_CHUNK_BYTES,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        path.unlink(missing_ok=True)
        return size

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, _check(key))
        except (NotFoundError, FileNotFoundError):
            pass

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, _check(key))
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    async def size(self, key: str) -> int:
        try:
            meta = await obstore.head_async(self._store, _check(key))
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(f"no object {key!r} in {self.url()}") from None
        return int(meta["size"])

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        # object_store lists by path segments; keys are filtered by string prefix after it.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else None
        out = []
        async for batch in obstore.list(self._store, prefix=folder, chunk_size=1000):
            for meta in batch:
                key = meta["path"]
                if key.startswith(prefix):
                    out.append(ObjectInfo(key, int(meta["size"])))
        out.sort(key=lambda o: o.key)
        return out

    def open(self, key: str) -> pa.NativeFile:
        try:
            reader = obstore.open_reader(self._store, _check(key))
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(f"no object {key!r} in {self.url()}") from None
        return pa.PythonFile(_Reader(reader), mode="r")

    def open_sized(self, key: str, size: int) -> pa.NativeFile:
        """Like `open`, for an object whose size is known: no request until the first read,
        then one ranged GET per read (the query server reads from pyarrow's I/O threads)."""
        return pa.PythonFile(_RangedObject(self, _check(key), size), mode="r")

    def read_range(self, key: str, start: int, length: int) -> pa.Buffer:
        """Bytes `start .. start + length` of an object, in one request, as a buffer over
        obstore's memory (no copy: a row group's column chunks can be tens of MiB).
        Raises ObjectNotFound."""
        try:
            data = obstore.get_range(self._store, _check(key), start=start, length=length)
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(f"no object {key!r} in {self.url()}") from None
        return pa.py_buffer(data)

    def url(self, key: str = "") -> str:
        return f"{self._url}/{key}" if key else self._url

    async def check(self) -> None:
        try:
            # One request, settled when it returns: an abandoned list stream can still be
            # running in obstore's runtime when the process exits on this very error.
            await obstore.list_with_delimiter_async(self._store)
        except (BaseError, OSError) as exc:
            raise StoreUnavailable(f"data_dir {self._url}: {describe_error(exc)}") from None

    def new_staging_file(self, suffix: str = "") -> StagingFile:
        return self._staging.new_file(suffix)

    async def cleanup_staging(self) -> int:
        return await asyncio.to_thread(self._staging.cleanup)


def open_cloud_store(url: str) -> CloudStore:
    """A store for `s3://bucket[/prefix]`, `gs://bucket[/prefix]` or `az://container[/prefix]`,
    configured from the environment. Raises ValueError for a URL without a valid bucket name
    and for credentials the library refuses before any request (a service-account file that
    is missing or not one, say)."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.rstrip("/").partition("/")
    if scheme not in SCHEMES or not BUCKET_NAME.match(bucket):
        raise ValueError(f"{url!r}: expected {scheme or 's3'}://BUCKET[/PREFIX]")
    from obstore.store import AzureStore, GCSStore, S3Store

    kinds = {"s3": S3Store, "gs": GCSStore, "az": AzureStore}
    options: dict[str, Any] = {"prefix": prefix or None, **_request_policy(scheme, os.environ)}
    try:
        if scheme == "az":
            store = AzureStore(container_name=bucket, **options)
        else:
            store = kinds[scheme](bucket, **options)
    except BaseError as exc:
        raise ValueError(f"{url!r}: {describe_error(exc)}") from None
    return CloudStore(url, store)


def _request_policy(scheme: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Client options (CLIENT_TIMEOUTS, then the client keys `env` sets, such as
    AWS_ALLOW_HTTP or AWS_TIMEOUT) and the retry config for a store of `scheme`."""
    prefix = _ENV_PREFIXES[scheme]
    from_env = {
        k: env[f"{prefix}{k.upper()}"] for k in _CLIENT_KEYS if f"{prefix}{k.upper()}" in env
    }
    return {"client_options": {**CLIENT_TIMEOUTS, **from_env}, "retry_config": RETRY_CONFIG}


class _ReadOnlyFile:
    """The file attributes pyarrow's PythonFile asks for, of a seekable read-only file."""

    closed = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False


class _RangedObject(_ReadOnlyFile):
    """One object of known size as a file: each read is one ranged GET of that range."""

    def __init__(self, store: CloudStore, key: str, size: int) -> None:
        self._store = store
        self._key = key
        self._size = size
        self._pos = 0

    def read(self, size: int = -1) -> pa.Buffer | bytes:
        end = self._size if size is None or size < 0 else min(self._pos + size, self._size)
        if end <= self._pos:
            return b""
        data = self._store.read_range(self._key, self._pos, end - self._pos)
        self._pos += data.size
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self.closed = True


class _Reader(_ReadOnlyFile):
    """obstore's ranged reader, as a file."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size) if size is not None and size >= 0 else self._reader.read()
        return data.to_bytes() if hasattr(data, "to_bytes") else bytes(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def size(self) -> int:
        return self._reader.size

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
            self.closed = True


def describe_error(exc: BaseException) -> str:
    """The useful line of an object_store error (they carry the whole request chain, then
    a "Debug source:" dump of the same)."""
    text = " ".join(str(exc).split("Debug source:", 1)[0].split())
    # S3 and GCS (XML API) name a missing bucket NoSuchBucket; Azure answers a wrong key
    # with AuthenticationFailed, Azurite with AuthorizationFailure.
    for marker in ("NoSuchBucket", "ContainerNotFound", "AccessDenied", "InvalidAccessKeyId",
                   "SignatureDoesNotMatch", "AuthenticationFailed", "AuthorizationFailure",
                   "connection refused"):  # fmt: skip
        if marker.lower() in text.lower():
            return f"{marker} ({type(exc).__name__}): {text[:300]}"
    return f"{type(exc).__name__}: {text[:300]}"


def _check(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key
