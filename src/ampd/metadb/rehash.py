"""Move stored manifests to Amp's manifest hashes (the data step of migration 0004).

Before, a manifest's hash was the SHA-256 of its JSON with sorted keys; now it is Amp's
(datasets/canonical.py). For every stored manifest whose hash is not its canonical one, in
the migration's transaction: the manifest is stored again, in canonical form, under the new
hash; versions, tags, jobs (their descriptor too) and table revisions move to it; the old
hash becomes an alias (`manifest_aliases`), so URLs, job descriptors and SQL that name it
still resolve; and the old row goes.

Two old manifests that differ only in what the canonical form drops or fills in (a missing
`start_block` and `"start_block": 0`) get one new hash. Their table revisions then meet:
the one already under the new hash stays active, the other becomes an inactive revision
(its files are kept, as for any replaced revision).
"""

from __future__ import annotations

import json

import psycopg
from psycopg.types.json import Jsonb

from ampd.datasets.arrow_types import UnknownArrowType
from ampd.datasets.canonical import canonical_hash, canonical_text
from ampd.logs import get_logger

log = get_logger("metadb")

_MOVES = (
    "UPDATE dataset_versions SET manifest_hash = %(new)s WHERE manifest_hash = %(old)s",
    "UPDATE dataset_tags SET manifest_hash = %(new)s WHERE manifest_hash = %(old)s",
    # A merge: the revision already under the new hash keeps being the active one.
    """UPDATE table_revisions r SET active = false
       WHERE r.manifest_hash = %(old)s AND r.active AND EXISTS (
           SELECT 1 FROM table_revisions n
           WHERE n.manifest_hash = %(new)s AND n.table_name = r.table_name AND n.active)""",
    "UPDATE table_revisions SET manifest_hash = %(new)s WHERE manifest_hash = %(old)s",
    """UPDATE jobs SET manifest_hash = %(new)s,
           descriptor = CASE WHEN descriptor ? 'manifest_hash'
                             THEN jsonb_set(descriptor, '{manifest_hash}', to_jsonb(%(new)s::text))
                             ELSE descriptor END
       WHERE manifest_hash = %(old)s""",
    "UPDATE manifest_aliases SET hash = %(new)s WHERE hash = %(old)s",
    "INSERT INTO manifest_aliases (old_hash, hash) VALUES (%(old)s, %(new)s) ON CONFLICT DO NOTHING",
    "DELETE FROM manifests WHERE hash = %(old)s",
)


async def rehash_manifests(conn: psycopg.AsyncConnection) -> int:
    """Move every stored manifest to its canonical hash; returns how many moved."""
    cursor = await conn.execute("SELECT hash, kind, manifest FROM manifests ORDER BY created_at")
    moved = 0
    for old, kind, manifest in await cursor.fetchall():
        try:
            new, text = canonical_hash(manifest), canonical_text(manifest)
        except (KeyError, TypeError, ValueError, UnknownArrowType) as exc:
            log.warning("manifest %s (%s) keeps its hash: no canonical form (%s)", old, kind, exc)
            continue
        if new == old:
            continue
        await conn.execute(
            """INSERT INTO manifests (hash, kind, manifest, created_at)
               SELECT %(new)s, kind, %(manifest)s, created_at FROM manifests WHERE hash = %(old)s
               ON CONFLICT (hash) DO NOTHING""",
            {"new": new, "old": old, "manifest": Jsonb(json.loads(text))},
        )
        for statement in _MOVES:
            await conn.execute(statement, {"new": new, "old": old})
        log.info("manifest %s is now %s (Amp's canonical hash)", old[:12], new[:12])
        moved += 1
    return moved
