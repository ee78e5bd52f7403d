"""Joins in streaming queries: each microbatch sends the joined rows its new rows make.

Amp's streaming-joins doc gives the update rule for an inner join of two sides, with d the
new rows of a microbatch and _old what came before it:

    new(L join R) = (dL join R_old) + (L_old join dR) + (dL join dR)

Here it holds for any number of readings of tables (a table joined with itself is two
readings: the query's second `eth.blocks` is renamed `"eth#2".blocks` so that each reading
gets its own files): for every non-empty set of readings, those read the part's new files
and the others the files the stream read before, and the terms' rows together are the new
joined rows, each once. Semi joins (`IN`, `EXISTS`) follow the same terms, as Amp treats
them. A term where a reading has no files is empty and is not run. A part of n readings
runs up to 2**n - 1 terms; more than MAX_READINGS readings are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ampd.sql.catalog import CatalogSnapshot
from ampd.sql.engine import QueryError
from ampd.sql.references import base_schema, distinct_occurrences, resolve

__all__ = ["MAX_READINGS", "StreamJoin", "join_terms"]

MAX_READINGS = 4
Reading = tuple[str, str]  # (schema as the rewritten query names it, table)
Term = dict[Reading, frozenset[int]]


@dataclass(frozen=True)
class StreamJoin:
    sql: str  # the query with each reading of a table named apart
    readings: tuple[Reading, ...]

    @classmethod
    def of(cls, sql: str, snapshot: CatalogSnapshot) -> StreamJoin:
        """The readings of a join query; QueryError(400) past MAX_READINGS."""

        def is_table(schema: str, table: str) -> bool:
            return _files(snapshot, schema, table) is not None

        rewritten, readings = distinct_occurrences(sql, is_table)
        if len(readings) > MAX_READINGS:
            raise QueryError(
                400,
                "INVALID_QUERY",
                f"a streaming join reads at most {MAX_READINGS} tables; this query reads "
                f"{len(readings)}",
            )
        return cls(rewritten, tuple(readings))

    def terms(
        self, snapshot: CatalogSnapshot, delta: frozenset[int], history: frozenset[int]
    ) -> list[Term]:
        """The update terms of one microbatch part (`delta`: its files; `history`: those
        the stream read before)."""
        files = {r: _files(snapshot, *r) or frozenset() for r in self.readings}
        return join_terms(files, delta, history)


def join_terms(
    files: Mapping[Reading, frozenset[int]], delta: frozenset[int], history: frozenset[int]
) -> list[Term]:
    """For every non-empty set of readings: those read their files in `delta`, the others
    their files in `history`; the terms where every reading has files."""
    readings = list(files)
    terms = []
    for chosen in range(1, 2 ** len(readings)):
        term = {
            reading: files[reading] & (delta if chosen >> i & 1 else history)
            for i, reading in enumerate(readings)
        }
        if all(term.values()):
            terms.append(term)
    return terms


def _files(snapshot: CatalogSnapshot, schema: str, table: str) -> frozenset[int] | None:
    """The live file ids of the table a reading names, or None if it names none."""
    key = resolve(base_schema(schema), snapshot.schemas)
    revision = snapshot.schemas.get(key) if key is not None else None
    if revision is None or table not in revision.tables:
        return None
    return frozenset(f.id for f in revision.tables[table])
