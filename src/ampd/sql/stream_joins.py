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

A UNION ALL of such queries at the top level is the sum of its branches, each of which
takes the rule for its own readings: a term of one branch gives the other branches' readings
no files (they add no rows to it). A UNION ALL elsewhere (in a subquery, after a WITH), or
INTERSECT / EXCEPT, together with a join is refused (`union_branches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ampd.sql.catalog import CatalogSnapshot
from ampd.sql.engine import QueryError
from ampd.sql.references import (
    base_schema,
    distinct_occurrences,
    identifier,
    resolve,
    significant_tokens,
)

__all__ = ["MAX_READINGS", "StreamJoin", "join_terms", "union_branches"]

MAX_READINGS = 4
Reading = tuple[str, str]  # (schema as the rewritten query names it, table)
Term = dict[Reading, frozenset[int]]


@dataclass(frozen=True)
class StreamJoin:
    sql: str  # the query with each reading of a table named apart
    readings: tuple[Reading, ...]
    branches: tuple[tuple[Reading, ...], ...] = ()  # per top-level UNION ALL branch

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
        branches = _branch_readings(rewritten, readings)
        if any(not branch for branch in branches):
            raise QueryError(
                400, "INVALID_QUERY", "each branch of a streaming UNION ALL must read a table"
            )
        return cls(rewritten, tuple(readings), branches)

    def terms(
        self, snapshot: CatalogSnapshot, delta: frozenset[int], history: frozenset[int]
    ) -> list[Term]:
        """The update terms of one microbatch part (`delta`: its files; `history`: those
        the stream read before)."""
        files = {r: _files(snapshot, *r) or frozenset() for r in self.readings}
        if len(self.branches) < 2:
            return join_terms(files, delta, history)
        terms = []
        for branch in self.branches:
            for term in join_terms({r: files[r] for r in branch}, delta, history):
                terms.append({r: term.get(r, frozenset()) for r in self.readings})
        return terms


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


def union_branches(sql: str) -> list[tuple[int, int]] | None:
    """The (start, end) offsets in `sql` of its top-level UNION ALL branches (one when it
    has no UNION); None when a join there could not take the branch rule: a UNION without
    ALL, INTERSECT or EXCEPT anywhere, a UNION inside parentheses, or a top-level WITH."""
    tokens = significant_tokens(sql)
    depth, start, spans = 0, 0, []
    for i, token in enumerate(tokens):
        text = token.group().lower() if token.lastgroup == "word" else token.group()
        if token.lastgroup == "other" and text in "()":
            depth += 1 if text == "(" else -1
            continue
        if token.lastgroup != "word":
            continue
        if text in ("intersect", "except") or (text == "with" and depth == 0 and i == 0):
            return None
        if text == "union":
            following = tokens[i + 1].group().lower() if i + 1 < len(tokens) else ""
            if depth != 0 or following != "all":
                return None
            spans.append((start, token.start()))
            start = tokens[i + 1].end()
    spans.append((start, len(sql)))
    return spans


def _branch_readings(sql: str, readings: list[Reading]) -> tuple[tuple[Reading, ...], ...]:
    """The readings of each top-level UNION ALL branch of `sql` (one branch, with all of
    them, when it has no top-level UNION ALL)."""
    spans = union_branches(sql)
    if spans is None or len(spans) < 2:
        return (tuple(readings),)
    tokens = significant_tokens(sql)
    where: dict[Reading, int] = {}
    for first, dot, second in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if dot.lastgroup != "dot" or first.lastgroup not in ("word", "quoted"):
            continue
        pair = (identifier(first), identifier(second))
        if pair in readings and pair not in where:
            where[pair] = next(b for b, (a, z) in enumerate(spans) if a <= first.start() < z)
    return tuple(tuple(r for r in readings if where.get(r) == b) for b in range(len(spans)))


def _files(snapshot: CatalogSnapshot, schema: str, table: str) -> frozenset[int] | None:
    """The live file ids of the table a reading names, or None if it names none."""
    key = resolve(base_schema(schema), snapshot.schemas)
    revision = snapshot.schemas.get(key) if key is not None else None
    if revision is None or table not in revision.tables:
        return None
    return frozenset(f.id for f in revision.tables[table])
