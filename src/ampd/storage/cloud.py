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
from pathlib import Path
from typing import Any

import obstore
import pyarrow as pa
from obstore.exceptions import BaseError, NotFoundError

from ampd.storage.staging import StagingArea, StagingFile
from ampd.storage.store import ObjectInfo, ObjectNotFound, ObjectStore, StoreUnavailable

SCHEMES = ("s3", "gs", "az")
# Parts of a multipart upload: object_store's default is 5 MiB, S3's minimum part size.
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
UPLOAD_CONCURRENCY = 4


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

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes `start .. start + length` of an object, in one request. Raises ObjectNotFound."""
        try:
            data = obstore.get_range(self._store, _check(key), start=start, length=length)
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(f"no object {key!r} in {self.url()}") from None
        return data.to_bytes()

    def url(self, key: str = "") -> str:
        return f"{self._url}/{key}" if key else self._url

    async def check(self) -> None:
        try:
            stream = obstore.list(self._store, chunk_size=1)
            async for _ in stream:
                break
        except (BaseError, OSError) as exc:
            raise StoreUnavailable(f"data_dir {self._url}: {describe_error(exc)}") from None

    def new_staging_file(self, suffix: str = "") -> StagingFile:
        return self._staging.new_file(suffix)

    async def cleanup_staging(self) -> int:
        return await asyncio.to_thread(self._staging.cleanup)


def open_cloud_store(url: str) -> CloudStore:
    """A store for `s3://bucket[/prefix]`, `gs://bucket[/prefix]` or `az://container[/prefix]`,
    configured from the environment. Raises ValueError for a URL without a bucket."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.rstrip("/").partition("/")
    if scheme not in SCHEMES or not bucket:
        raise ValueError(f"{url!r}: expected {scheme or 's3'}://BUCKET[/PREFIX]")
    from obstore.store import AzureStore, GCSStore, S3Store

    kinds = {"s3": S3Store, "gs": GCSStore, "az": AzureStore}
    options: dict[str, Any] = {"prefix": prefix or None}
    if scheme == "az":
        store = AzureStore(container_name=bucket, **options)
    else:
        store = kinds[scheme](bucket, **options)
    return CloudStore(url, store)


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

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._pos + size, self._size)
        if end <= self._pos:
            return b""
        data = self._store.read_range(self._key, self._pos, end - self._pos)
        self._pos += len(data)
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
    """The useful line of an object_store error (they carry the whole request chain)."""
    text = " ".join(str(exc).split())
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
