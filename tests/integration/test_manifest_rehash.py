"""Migration 0004 on a real PostgreSQL: stored manifests move to Amp's hashes, old ones resolve."""

from __future__ import annotations

import hashlib
import json

import psycopg

from ampd.datasets.manifest import generate_manifest, manifest_hash
from ampd.datasets.registry import DatasetRegistry
from ampd.metadb.db import MetadataDb
from ampd.metadb.migrate import migrate


def old_hash(obj: dict) -> str:
    """How ampd hashed manifests before: sorted keys, compact."""
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def store_old(conn: psycopg.Connection, dataset: str, obj: dict) -> str:
    h = old_hash(obj)
    conn.execute(
        "INSERT INTO manifests (hash, kind, manifest) VALUES (%s, 'evm-rpc', %s)",
        (h, json.dumps(obj)),
    )
    conn.execute("INSERT INTO datasets (namespace, name) VALUES ('ns', %s)", (dataset,))
    conn.execute(
        "INSERT INTO dataset_versions (namespace, name, version, manifest_hash) "
        "VALUES ('ns', %s, '1.0.0', %s)",
        (dataset, h),
    )
    for tag in ("latest", "dev"):
        conn.execute(
            "INSERT INTO dataset_tags (namespace, name, tag, manifest_hash, version) "
            "VALUES ('ns', %s, %s, %s, '1.0.0')",
            (dataset, tag, h),
        )
    descriptor = {"kind": "materialize-raw", "manifest_hash": h, "dataset_name": dataset}
    conn.execute(
        "INSERT INTO jobs (namespace, name, manifest_hash, status, descriptor, start_block, "
        "end_block) VALUES ('ns', %s, %s, 'COMPLETED', %s, 0, 10)",
        (dataset, h, json.dumps(descriptor)),
    )
    conn.execute(
        "INSERT INTO table_revisions (namespace, name, manifest_hash, table_name, revision, path) "
        "VALUES ('ns', %s, %s, 'blocks', gen_random_uuid(), %s)",
        (dataset, h, f"ns/{dataset}/blocks/r"),
    )
    return h


async def test_stored_manifests_move_to_amps_hashes_and_old_hashes_still_resolve(db_url: str):
    await migrate(db_url, until=3)
    short = generate_manifest(network="anvil")
    del short["start_block"]  # the same manifest as `full` once defaults are filled in
    full = generate_manifest(network="anvil")
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = store_old(conn, "first", short)
        second = store_old(conn, "second", full)
    new = manifest_hash(full)
    assert len({first, second, new}) == 3

    applied = await migrate(db_url)
    assert [m.version for m in applied] == [4]

    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT hash FROM manifests").fetchall() == [(new,)]
        aliases = dict(conn.execute("SELECT old_hash, hash FROM manifest_aliases").fetchall())
        assert aliases == {first: new, second: new}
        for table in ("dataset_versions", "dataset_tags", "jobs", "table_revisions"):
            hashes = conn.execute(f"SELECT DISTINCT manifest_hash FROM {table}").fetchall()
            assert hashes == [(new,)], table
        descriptors = conn.execute("SELECT descriptor->>'manifest_hash' FROM jobs").fetchall()
        assert descriptors == [(new,), (new,)]
        # Both revisions of `blocks` are kept; the one moved first stays the active one.
        revisions = conn.execute(
            "SELECT name, active FROM table_revisions ORDER BY name"
        ).fetchall()
        assert revisions == [("first", True), ("second", False)]
        stored = conn.execute("SELECT manifest FROM manifests").fetchone()[0]
        assert stored["start_block"] == 0  # stored in canonical form

    async with MetadataDb(db_url, pool_size=2) as db:
        registry = DatasetRegistry(db)
        assert (await registry.get_manifest(first))["network"] == "anvil"
        revision = await registry.resolve("ns", "first", first)
        assert revision.manifest_hash == new and revision.version == "1.0.0"
        registered, _ = await registry.register("ns", "third", second)  # by an old hash
        assert registered.hash == new

    assert await migrate(db_url) == []  # done once
