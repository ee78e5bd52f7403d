"""Folders of small files: `providers_dir` (provider TOML) and `manifests_dir` (manifest
JSON), each a local path or an object-store URL, as Amp allows for every `*_dir` key.

The files are few and small, so the API is synchronous; callers on an event loop run it in
a thread (`asyncio.to_thread`). A write replaces the file whole: readers see the old
content or the new, never part of one (a rename locally, a single PUT in an object store).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import obstore
from obstore.exceptions import BaseError, NotFoundError

from ampd.storage.cloud import SCHEMES, describe_error, open_cloud_store


class FolderUnreadable(Exception):
    """A folder that cannot be listed (a missing bucket, refused credentials, ...)."""


class Folder(ABC):
    """A flat folder of named files."""

    location: str  # the path or URL, for messages

    @abstractmethod
    def names(self, suffix: str) -> list[str]:
        """The names of the files directly in the folder that end with `suffix`, sorted;
        none if a local folder does not exist. Raises FolderUnreadable."""

    @abstractmethod
    def read(self, name: str) -> bytes:
        """A file's content. Raises FileNotFoundError."""

    @abstractmethod
    def write(self, name: str, data: bytes) -> None:
        """Create or replace a file."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove a file; nothing happens if there is none."""

    def where(self, name: str) -> str:
        """The file's path or URL."""
        return f"{self.location}/{name}"


def open_folder(location: str | os.PathLike[str]) -> Folder:
    """The folder at a local path or an `s3://`, `gs://` or `az://` URL."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    if sep and scheme in SCHEMES:
        return CloudFolder(text)
    if sep and scheme == "file":
        text = text[len("file://") :]
    return LocalFolder(Path(text))


class LocalFolder(Folder):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def names(self, suffix: str) -> list[str]:
        if not self.path.is_dir():
            if self.path.exists():
                raise FolderUnreadable(f"{self.location}: not a folder")
            return []
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:
            raise FolderUnreadable(f"{self.location}: cannot list: {exc.strerror}") from None
        return sorted(p.name for p in entries if p.name.endswith(suffix) and p.is_file())

    def read(self, name: str) -> bytes:
        return (self.path / _check(name)).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / _check(name)
        staging = self.path / f".{name}.tmp"
        staging.write_bytes(data)
        os.replace(staging, target)

    def delete(self, name: str) -> None:
        (self.path / _check(name)).unlink(missing_ok=True)


class CloudFolder(Folder):
    def __init__(self, url: str) -> None:
        self.location = url.rstrip("/")
        self._client = open_cloud_store(self.location).client

    def names(self, suffix: str) -> list[str]:
        try:
            found = obstore.list_with_delimiter(self._client)["objects"]
        except (BaseError, OSError) as exc:
            raise FolderUnreadable(f"{self.location}: cannot list: {describe_error(exc)}") from None
        return sorted(m["path"] for m in found if m["path"].endswith(suffix))

    def read(self, name: str) -> bytes:
        try:
            return obstore.get(self._client, _check(name)).bytes().to_bytes()
        except (NotFoundError, FileNotFoundError):
            raise FileNotFoundError(f"no file {self.where(name)}") from None

    def write(self, name: str, data: bytes) -> None:
        obstore.put(self._client, _check(name), data)

    def delete(self, name: str) -> None:
        try:
            obstore.delete(self._client, _check(name))
        except (NotFoundError, FileNotFoundError):
            pass


def _check(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid file name {name!r}")
    return name
