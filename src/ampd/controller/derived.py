"""Derived datasets in the Admin API: their dependencies resolved, their SQL planned.

`POST /schema` (routes/schema.py) plans tables for Amp's CLI as it builds a package;
`POST /datasets` with a `"manifest"` manifest plans every table against the registered
dependencies and checks it against its declared schema before anything is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from ampd.controller.admin_api import ApiError
from ampd.datasets.derived import DerivedManifest, DerivedManifestError
from ampd.datasets.registry import DatasetRegistry, RegistryError
from ampd.metadb.db import MetadataDb
from ampd.sql.derived_range import covered_through
from ampd.sql.derived_schema import DerivedSchemaError, infer_schemas
from ampd.sql.functions.js import JsFunction
from ampd.sql.references import parse_reference


class DependencyNotFound(Exception):
    def __init__(self, alias: str, reference: str) -> None:
        super().__init__(f"dependency {alias!r} ({reference}) not found in the dataset registry")
        self.alias = alias


@dataclass(frozen=True)
class Dependencies:
    """What a derived dataset's SQL is planned against, by alias."""

    tables: dict[str, dict[str, pa.Schema]]  # its tables and their schemas
    networks: dict[str, list[str]]  # the networks its tables are of
    functions: dict[str, list[JsFunction]]  # a derived one's JavaScript functions


async def dependency_revisions(
    registry: DatasetRegistry, dependencies: Mapping[str, str]
) -> Dependencies:
    """The dependencies' tables, networks and functions; raises DependencyNotFound for a
    dataset, version or hash the registry does not have."""
    out: dict[str, dict[str, pa.Schema]] = {}
    networks: dict[str, list[str]] = {}
    functions: dict[str, list[JsFunction]] = {}
    for alias, reference in dependencies.items():
        parsed = parse_reference(reference)
        if parsed is None or parsed.revision is None:
            raise DependencyNotFound(alias, reference)
        try:
            revision = await registry.resolve(parsed.namespace, parsed.name, parsed.revision)
        except RegistryError:
            raise DependencyNotFound(alias, reference) from None
        out[alias] = dict(revision.manifest.schemas)
        networks[alias] = _networks(revision.manifest)
        if isinstance(revision.manifest, DerivedManifest):
            functions[alias] = list(revision.manifest.functions.values())
    return Dependencies(out, networks, functions)


def _networks(manifest: object) -> list[str]:
    """A raw dataset's network; a derived one's tables' (Amp's CLI writes one per table)."""
    network = getattr(manifest, "network", None)
    if isinstance(network, str):
        return [network]
    tables = getattr(manifest, "raw", {}).get("tables") or {}
    return sorted({t["network"] for t in tables.values() if isinstance(t.get("network"), str)})


async def check_derived(registry: DatasetRegistry, manifest: DerivedManifest) -> None:
    """Raise ApiError(400, MANIFEST_VALIDATION_ERROR) unless every table plans against the
    registered dependencies and gives its declared schema (Amp's code for registration; the
    message names the cause and its own code)."""
    try:
        deps = await dependency_revisions(registry, manifest.dependencies)
        sql = {name: table.sql for name, table in manifest.tables.items()}
        # Planning is CPU work for DataFusion: off the event loop.
        await asyncio.to_thread(
            infer_schemas,
            sql,
            deps.tables,
            manifest.schemas,
            list(manifest.functions.values()),
            deps.functions,
        )
    except DependencyNotFound as exc:
        raise ApiError(400, "MANIFEST_VALIDATION_ERROR", f"DEPENDENCY_NOT_FOUND: {exc}") from None
    except (DerivedSchemaError, DerivedManifestError) as exc:
        raise ApiError(400, "MANIFEST_VALIDATION_ERROR", f"{exc.code}: {exc}") from None


async def dependencies_start(
    registry: DatasetRegistry, manifest: DerivedManifest, depth: int = 0
) -> int:
    """The first block a derived dataset has: the latest start of its dependencies (a raw
    one's `start_block`, a derived one's own dependencies'); 0 when one is not registered."""
    start = 0
    for revision in await registry.dependencies(manifest.dependencies.values()):
        dependency = revision.manifest
        if isinstance(dependency, DerivedManifest):
            if depth < 16:  # registration refuses cycles; this bounds a corrupt registry
                start = max(start, await dependencies_start(registry, dependency, depth + 1))
        else:
            start = max(start, dependency.start_block)
    return start


async def dependencies_committed_through(
    db: MetadataDb, registry: DatasetRegistry, manifest: DerivedManifest, start: int = 0
) -> int | None:
    """The last block every dependency has committed without a gap from `start` (None when
    one is not registered)."""
    through = None
    for reference in manifest.dependencies.values():
        parsed = parse_reference(reference)
        if parsed is None or parsed.revision is None:
            return None
        try:
            revision = await registry.resolve(parsed.namespace, parsed.name, parsed.revision)
        except RegistryError:
            return None
        rows = await db.fetch_all("revision_file_ranges", {"manifest_hash": revision.manifest_hash})
        ranges: dict[str, list[tuple[int, int]]] = {t: [] for t in revision.manifest.schemas}
        for row in rows:
            ranges.setdefault(row["table_name"], []).append((row["start_block"], row["end_block"]))
        reached = covered_through(ranges, start)
        through = reached if through is None else min(through, reached)
    return through
