"""The data store: where Parquet files live. A local directory here; object stores in cloud.py.

Keys are `/`-separated paths relative to the store's root (see `paths.py`). Every operation
is async so that a remote store can slot in behind the same interface; the local store runs
its blocking file-system calls in a thread.
"""

from __future__ import annotations  # `list` is also a method name here

import asyncio
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa

from ampd.storage.staging import STAGING_GRACE_SECS, StagingArea, StagingFile

__all__ = ["STAGING_GRACE_SECS", "StagingFile"]  # re-exported: writers and tests take them here

STAGING_DIR = ".staging"


class ObjectNotFound(FileNotFoundError):
    """No object under this key."""


class StoreUnavailable(OSError):
    """The data store cannot be used (missing bucket, refused credentials, unreachable)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(ABC):
    """A store of immutable objects under string keys."""

    @abstractmethod
    async def put_file(self, local_path: str | os.PathLike, key: str) -> int:
        """Move a finished local file into the store under `key`; returns its size.

        The object appears whole or not at all. The local file is consumed.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object; no error when it does not exist."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def size(self, key: str) -> int:
        """The object's size in bytes. Raises ObjectNotFound."""

    @abstractmethod
    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""

    @abstractmethod
    def open(self, key: str) -> pa.NativeFile:
        """A readable, seekable file for the object (for pyarrow readers). Raises ObjectNotFound."""

    def open_sized(self, key: str, size: int) -> pa.NativeFile:
        """Like `open`, for an object whose size is known (a remote store then needs no
        request to learn it)."""
        return self.open(key)

    @abstractmethod
    def url(self, key: str = "") -> str:
        """The object's URL (`file:///...`, later `s3://...`); the store's root for ""."""

    def local_path(self, key: str) -> Path | None:
        """A path on this machine's file system for the object, when the store has one."""
        return None

    @abstractmethod
    async def check(self) -> None:
        """Make sure the store can be used before anything is written to it.

        Raises StoreUnavailable with one line naming `data_dir`, the URL and the reason."""

    @abstractmethod
    def new_staging_file(self, suffix: str = "") -> StagingFile:
        """A fresh local file, locked, to write to before `put_file` takes it."""

    @abstractmethod
    async def cleanup_staging(self) -> int:
        """Delete the staging files whose writer is gone (no process holds their lock);
        returns the count. Files that a live process writes are never touched."""


class LocalStore(ObjectStore):
    """A directory on the local file system. Staging files live under `<root>/.staging`, on
    the same file system, so that putting a file is one atomic rename."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self._staging = StagingArea(self.root / STAGING_DIR)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    async def put_file(self, local_path: str | os.PathLike, key: str) -> int:
        return await asyncio.to_thread(self._put_file, Path(local_path), self._path(key))

    def _put_file(self, source: Path, target: Path) -> int:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb+") as f:
            os.fsync(f.fileno())  # the bytes must be on disk before the name points at them
        try:
            os.replace(source, target)
        except OSError:  # another file system: copy next to the target, then rename
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            try:
                shutil.copyfile(source, partial)
                with open(partial, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            source.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return target.stat().st_size

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.url()}") from None

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[ObjectInfo]:
        # Walk only the deepest directory the prefix names; filter the rest by string prefix.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and STAGING_DIR in dirnames:
                dirnames.remove(STAGING_DIR)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix) and not name.endswith(".partial"):
                    try:
                        out.append(ObjectInfo(key, (Path(dirpath) / name).stat().st_size))
                    except FileNotFoundError:  # deleted while we walked
                        pass
        out.sort(key=lambda o: o.key)
        return out

    def open(self, key: str) -> pa.NativeFile:
        try:
            return pa.OSFile(str(self._path(key)), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.url()}") from None

    def url(self, key: str = "") -> str:
        return (self._path(key) if key else self.root).as_uri()

    def local_path(self, key: str) -> Path:
        return self._path(key)

    async def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreUnavailable(f"data_dir {self.root}: exists and is not a folder")

    def new_staging_file(self, suffix: str = "") -> StagingFile:
        return self._staging.new_file(suffix)

    async def cleanup_staging(self) -> int:
        return await asyncio.to_thread(self._staging.cleanup)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)


def open_store(data_dir: str | os.PathLike) -> ObjectStore:
    """The store for a `data_dir` setting: a local path, a `file://` URL, or an object store
    (`s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]`).

    Raises ValueError naming the setting for a malformed URL or an unknown scheme.
    """
    text = os.fspath(data_dir)
    scheme = urlparse(text).scheme if "://" in text else ""
    if scheme == "":
        return LocalStore(text)
    if scheme == "file":
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"data_dir {text!r}: file URLs must name a local path")
        return LocalStore(unquote(parsed.path))
    if scheme in ("s3", "gs", "az"):
        from ampd.storage.cloud import open_cloud_store

        try:
            return open_cloud_store(text)
        except ValueError as exc:
            raise ValueError(f"data_dir {exc}") from None
    raise ValueError(
        f"data_dir {text!r}: unknown scheme {scheme!r}; expected a path, file://, s3://, gs:// "
        "or az://"
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
