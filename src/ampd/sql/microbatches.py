"""What a streaming query sends, microbatch by microbatch, in Amp's message protocol.

A streaming query reads the tables it names (and no other dataset's, whatever their table
names) in microbatches: first everything committed when it starts, then each block range
committed since, in block order. Every data batch of a microbatch carries, as Flight
`app_metadata`, `{"ranges": [...], "ranges_complete": false}`; the microbatch ends with an
empty batch whose metadata says `"ranges_complete": true`. A range is Amp's `BlockRange`
as JSON: `{"numbers": {"start", "end"}, "network", "hash", "prev_hash"}`, one per network,
`hash` that of the end block and `prev_hash` the parent of the start block.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
import pyarrow as pa

from ampd.sql.catalog import CommittedFile, RevisionTables

QueryTables = Sequence[tuple[RevisionTables, str]]  # (revision, table name) a query reads


@dataclass(frozen=True)
class Microbatch:
    """The files one microbatch reads, and the block ranges they cover. `parts`: the same
    files by block range, in block order: run one after the other, each in one partition,
    they give the rows in block order."""

    files: frozenset[int]
    ranges: list[dict]
    parts: tuple[frozenset[int], ...] = ()


def block_ranges(files: Iterable[tuple[str, CommittedFile]]) -> list[dict]:
    """Amp's block ranges of (network, file) pairs: one per network, from the lowest start
    to the highest end, ordered by network."""
    lowest: dict[str, CommittedFile] = {}
    highest: dict[str, CommittedFile] = {}
    for network, f in files:
        if network not in lowest or f.start_block < lowest[network].start_block:
            lowest[network] = f
        if network not in highest or f.end_block > highest[network].end_block:
            highest[network] = f
    return [
        {
            "numbers": {"start": lowest[n].start_block, "end": highest[n].end_block},
            "network": n,
            "hash": highest[n].hash,
            "prev_hash": lowest[n].prev_hash,
        }
        for n in sorted(lowest)
    ]


def committed(
    tables: QueryTables, seen: frozenset[int] = frozenset(), max_blocks: int = 1000
) -> list[Microbatch]:
    """Everything committed in the query's tables but `seen`, in block order, as
    microbatches of consecutive files spanning at most `max_blocks` blocks each (a file
    larger than that is a microbatch of its own)."""
    spans = _unseen(tables, seen)
    groups: list[list[tuple[int, int]]] = []
    for span in sorted(spans):
        if groups and span[1] - groups[-1][0][0] + 1 <= max_blocks:
            groups[-1].append(span)
        else:
            groups.append([span])
    return [_microbatch([spans[span] for span in group]) for group in groups]


def query_ranges(tables: QueryTables) -> list[dict]:
    """The block ranges of everything committed in the query's tables (a batch query's)."""
    return block_ranges(_files(tables))


def _files(tables: QueryTables) -> Iterator[tuple[str, CommittedFile]]:
    """(network, file) of every committed file of the query's tables."""
    for rev, table in tables:
        for f in rev.tables.get(table, ()):
            yield rev.network, f


def _unseen(
    tables: QueryTables, seen: set[int] | frozenset[int]
) -> dict[tuple[int, int], list[tuple[str, CommittedFile]]]:
    """The (network, file) pairs of the query's tables not in `seen`, by block range."""
    spans: dict[tuple[int, int], list[tuple[str, CommittedFile]]] = {}
    for network, f in _files(tables):
        if f.id not in seen:
            spans.setdefault((f.start_block, f.end_block), []).append((network, f))
    return spans


def _microbatch(parts: list[list[tuple[str, CommittedFile]]]) -> Microbatch:
    """A microbatch of consecutive block ranges' files (`parts`, in block order)."""
    files = [item for part in parts for item in part]
    return Microbatch(
        frozenset(f.id for _, f in files),
        block_ranges(files),
        tuple(frozenset(f.id for _, f in part) for part in parts),
    )


def new_microbatches(tables: QueryTables, seen: set[int]) -> list[Microbatch]:
    """The files of the query's tables not in `seen`, one microbatch per block range (the
    files of every table covering it), in block order."""
    spans = _unseen(tables, seen)
    return [_microbatch([spans[span]]) for span in sorted(spans)]


Cursor = dict[str, tuple[int, str]]  # network -> (last block received, its hash)


class CursorError(ValueError):
    """An `amp-resume` value that is not a cursor."""


def parse_cursor(text: str) -> Cursor | None:
    """An `amp-resume` header: `{"<network>": {"number": N, "hash": "0x.."}, ...}`, as Amp's
    clients build it from the ranges of the last microbatch they finished. Empty: none."""
    if not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CursorError(f"amp-resume is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CursorError("amp-resume must be a JSON object of network -> {number, hash}")
    cursor: Cursor = {}
    for network, entry in value.items():
        number = entry.get("number") if isinstance(entry, dict) else None
        block_hash = entry.get("hash") if isinstance(entry, dict) else None
        if type(number) is not int or number < 0 or not isinstance(block_hash, str):
            raise CursorError(
                f"amp-resume[{network!r}] = {orjson.dumps(entry).decode()}: expected "
                '{"number": <block number>, "hash": "0x<block hash>"}'
            )
        cursor[network] = (number, block_hash.lower())
    return cursor


def resumed(tables: QueryTables, cursor: Cursor) -> frozenset[int]:
    """The files a stream resumed from `cursor` does not send again: those ending at or
    before the cursor's block on its network. Where the committed file ending at that block
    has another hash (the chain was reorganized since), nothing of that network is skipped:
    the stream starts over there, and the client sees ranges it already had, which Amp's
    clients take as a reorg."""
    skip: set[int] = set()
    for network, (number, block_hash) in cursor.items():
        files = [f for net, f in _files(tables) if net == network]
        if any(f.end_block == number and f.hash.lower() != block_hash for f in files):
            continue
        skip.update(f.id for f in files if f.end_block <= number)
    return frozenset(skip)


def metadata(ranges: list[dict], complete: bool) -> pa.Buffer:
    """A batch's `app_metadata`."""
    return pa.py_buffer(orjson.dumps({"ranges": ranges, "ranges_complete": complete}))


def end_of(schema: pa.Schema, ranges: list[dict]) -> tuple[pa.RecordBatch, pa.Buffer]:
    """The empty batch that ends a microbatch (or a batch query's answer) over `ranges`."""
    empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    return empty, metadata(ranges, True)
