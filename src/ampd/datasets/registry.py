"""The dataset registry: manifests by hash, datasets by `namespace/name`, versions and tags.

Registering moves the `dev` tag to the manifest, and the `latest` tag when the registered
version is the highest semver of the dataset.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obstore.exceptions import BaseError
from psycopg.types.json import Jsonb

from ampd.datasets.manifest import Manifest, canonical_manifest, parse_manifest
from ampd.datasets.semver import SemVer, is_semver
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb, execute, fetch_all
from ampd.storage.folder import FolderUnreadable, open_folder

if TYPE_CHECKING:
    from ampd.datasets.derived import DerivedManifest

log = get_logger("registry")

NAMESPACE = re.compile(r"^[a-z0-9_]+$")
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
HASH = re.compile(r"^[0-9a-f]{64}$")
SPECIAL_TAGS = ("latest", "dev")
DEFAULT_NAMESPACE = "_"


class RegistryError(Exception):
    """A registry request that cannot be served; `code` is the Admin API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Revision:
    """One resolved dataset revision: the manifest a `ns/name@rev` reference points at."""

    namespace: str
    name: str
    revision: str
    manifest_hash: str
    manifest: Manifest | DerivedManifest
    version: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.namespace}/{self.name}@{self.revision}"


def check_name(namespace: str, name: str) -> None:
    """Raise RegistryError(INVALID_PATH) unless namespace and name are well formed."""
    if not NAMESPACE.match(namespace):
        raise RegistryError("INVALID_PATH", f"invalid namespace {namespace!r}: expected [a-z0-9_]+")
    if not NAME.match(name):
        raise RegistryError(
            "INVALID_PATH", f"invalid dataset name {name!r}: expected [a-z_][a-z0-9_]*"
        )


def check_revision(revision: str) -> None:
    if revision in SPECIAL_TAGS or HASH.match(revision) or is_semver(revision):
        return
    raise RegistryError(
        "INVALID_PATH",
        f"invalid revision {revision!r}: expected latest, dev, a 64-hex manifest hash or a "
        "semantic version",
    )


class DatasetRegistry:
    """Reads and writes the registry tables through named queries."""

    def __init__(self, db: MetadataDb) -> None:
        self._db = db

    async def put_manifest(self, obj: Any) -> Manifest:
        """Validate and store a manifest (idempotent); raises InvalidManifest/ManifestValidationError."""
        manifest = load_manifest(obj)
        await self._db.execute(
            "insert_manifest",
            _manifest_row(manifest),
        )
        return manifest

    async def get_manifest(self, manifest_hash: str) -> dict[str, Any] | None:
        """The manifest stored under `manifest_hash`, or under the hash it was given
        before manifest hashes became Amp's (migration 0004)."""
        row = await self._db.fetch_one("get_manifest", {"hash": manifest_hash})
        return None if row is None else row["manifest"]

    async def current_hash(self, manifest_hash: str) -> str | None:
        """The hash a stored manifest goes by now (itself, or what an old hash became)."""
        row = await self._db.fetch_one("get_manifest", {"hash": manifest_hash})
        return None if row is None else row["hash"]

    async def register(
        self, namespace: str, name: str, manifest: Any, version: str | None = None
    ) -> tuple[Manifest, str | None]:
        """Register a manifest object (or the hash of a stored one) under `namespace/name`.

        Returns the manifest and the version it was registered as.
        """
        check_name(namespace, name)
        if version is not None and not is_semver(version):
            raise RegistryError(
                "INVALID_BODY", f"invalid version {version!r}: expected a semantic version"
            )
        if isinstance(manifest, str):
            if not HASH.match(manifest):
                raise RegistryError(
                    "INVALID_MANIFEST", "manifest must be a JSON object or a 64-hex manifest hash"
                )
            stored = await self.get_manifest(manifest)
            if stored is None:
                raise RegistryError("MANIFEST_NOT_FOUND", f"no manifest with hash {manifest}")
            parsed = load_manifest(stored)
        else:
            parsed = load_manifest(manifest)
        key = {"namespace": namespace, "name": name}
        async with self._db.transaction() as conn:
            await execute(conn, "insert_manifest", _manifest_row(parsed))
            await execute(conn, "upsert_dataset", key)
            tag = {**key, "manifest_hash": parsed.hash, "version": version}
            await execute(conn, "set_tag", {**tag, "tag": "dev"})
            if version is not None:
                await execute(conn, "upsert_version", tag)
                versions = [
                    row["version"] for row in await fetch_all(conn, "dataset_versions", key)
                ]
                if max(versions, key=SemVer) == version:
                    await execute(conn, "set_tag", {**tag, "tag": "latest"})
            await conn.execute("SELECT pg_notify('dataset_changes', %s)", (f"{namespace}/{name}",))
        log.info("registered %s/%s (%s) as %s", namespace, name, parsed.hash[:12], version or "dev")
        return parsed, version

    async def dependencies(self, references: Any) -> list[Revision]:
        """The revisions `references` (`ns/name@revision` strings: a derived manifest's
        dependencies) name, in order; those the registry does not have are left out."""
        from ampd.sql.references import parse_reference

        found = []
        for reference in references:
            parsed = parse_reference(reference)
            if parsed is None or parsed.revision is None:
                continue
            try:
                found.append(await self.resolve(parsed.namespace, parsed.name, parsed.revision))
            except RegistryError:
                continue
        return found

    async def resolve(self, namespace: str, name: str, revision: str) -> Revision:
        """The manifest of `namespace/name@revision`; raises RegistryError(DATASET_NOT_FOUND)."""
        check_name(namespace, name)
        check_revision(revision)
        key = {"namespace": namespace, "name": name}
        manifest_hash: str | None = None
        version: str | None = None
        if revision in SPECIAL_TAGS:
            for row in await self._db.fetch_all("dataset_tags", key):
                if row["tag"] == revision:
                    manifest_hash, version = row["manifest_hash"], row["version"]
        elif HASH.match(revision):
            # Any stored manifest of an existing dataset, also one no tag points at any more
            # (the revision of an older job).
            if await self._db.fetch_one("dataset_exists", key) is not None:
                manifest_hash = await self.current_hash(revision)
                if manifest_hash is not None:
                    rows = await self._db.fetch_all("dataset_versions", key)
                    version = next(
                        (r["version"] for r in rows if r["manifest_hash"] == manifest_hash), None
                    )
        else:
            for row in await self._db.fetch_all("dataset_versions", key):
                if row["version"] == revision:
                    manifest_hash, version = row["manifest_hash"], revision
        if manifest_hash is None:
            raise RegistryError(
                "DATASET_NOT_FOUND", f"dataset {namespace}/{name}@{revision} not found"
            )
        stored = await self.get_manifest(manifest_hash)
        assert stored is not None  # foreign key
        return Revision(namespace, name, revision, manifest_hash, load_manifest(stored), version)

    async def list_datasets(self) -> list[dict[str, Any]]:
        rows = await self._db.fetch_all("list_datasets")
        result = []
        for row in rows:
            versions = sorted(row["versions"], key=SemVer, reverse=True)
            entry: dict[str, Any] = {
                "namespace": row["namespace"],
                "name": row["name"],
                "versions": versions,
            }
            if row["latest_version"]:
                entry["latest_version"] = row["latest_version"]
            result.append(entry)
        return result

    async def versions(self, namespace: str, name: str) -> dict[str, Any]:
        check_name(namespace, name)
        key = {"namespace": namespace, "name": name}
        if await self._db.fetch_one("dataset_exists", key) is None:
            raise RegistryError("DATASET_NOT_FOUND", f"dataset {namespace}/{name} not found")
        rows = await self._db.fetch_all("dataset_versions", key)
        rows.sort(key=lambda r: SemVer(r["version"]), reverse=True)
        tags = {
            row["tag"]: row["manifest_hash"]
            for row in await self._db.fetch_all("dataset_tags", key)
        }
        return {
            "namespace": namespace,
            "name": name,
            "versions": [
                {
                    "version": r["version"],
                    "manifest_hash": r["manifest_hash"],
                    "created_at": _rfc3339(r["created_at"]),
                    "updated_at": _rfc3339(r["updated_at"]),
                }
                for r in rows
            ],
            "special_tags": tags,
        }

    async def delete(self, namespace: str, name: str) -> None:
        check_name(namespace, name)
        await self._db.execute("delete_dataset", {"namespace": namespace, "name": name})
        await self._db.notify("dataset_changes", f"{namespace}/{name}")

    async def register_directory(self, location: str | Path) -> int:
        """Register every `*.json` manifest in `location` (a folder or an object-store URL)
        as `_/<file stem>`; returns the count.

        A file that is not a valid manifest is logged and skipped: one bad file must not keep
        the service from starting. A folder that cannot be listed raises FolderUnreadable.
        """
        folder = open_folder(location)
        try:
            names = await asyncio.to_thread(folder.names, ".json")
        except FolderUnreadable as exc:
            raise FolderUnreadable(f"manifests_dir {exc}") from None
        count = 0
        for name in names:
            stem = name.removesuffix(".json")
            try:
                obj = json.loads(await asyncio.to_thread(folder.read, name))
                check_name(DEFAULT_NAMESPACE, stem)
                await self.register(DEFAULT_NAMESPACE, stem, obj)
                count += 1
            except (OSError, BaseError, ValueError, RegistryError) as exc:
                log.warning("skipping manifest file %s: %s", folder.where(name), exc)
        return count


def load_manifest(obj: Any) -> Manifest | DerivedManifest:
    """A raw manifest (parse_manifest) or a derived one (kind "manifest", parse_derived:
    its shape and table order; its SQL is checked against its dependencies by the Admin
    API before it is registered)."""
    from ampd.datasets.derived import DERIVED_KIND, parse_derived  # it reads sql.references

    if isinstance(obj, dict) and obj.get("kind") == DERIVED_KIND:
        return parse_derived(obj)
    return parse_manifest(obj)


def _manifest_row(manifest: Manifest | DerivedManifest) -> dict[str, Any]:
    """A manifest as stored: in canonical form (as Amp stores it), under its hash."""
    return {
        "hash": manifest.hash,
        "kind": manifest.kind,
        "manifest": Jsonb(canonical_manifest(manifest.raw)),
    }


def _rfc3339(value: datetime) -> str:
    return value.isoformat()
