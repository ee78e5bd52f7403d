"""A streaming query's microbatches: which files each reads and the block ranges it reports,
over the query's own tables only."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from ampd.sql.catalog import CommittedFile, RevisionTables
from ampd.sql.microbatches import (
    CursorError,
    block_ranges,
    committed,
    end_of,
    metadata,
    new_microbatches,
    parse_cursor,
    resumed,
)


def file(id_: int, start: int, end: int) -> CommittedFile:
    return CommittedFile(
        id=id_,
        path=f"/f{id_}",
        start_block=start,
        end_block=end,
        rows=1,
        hash=f"0x{end:064x}",
        prev_hash=f"0x{start - 1:064x}",
    )


def revision(
    manifest_hash: str, network: str, **tables: tuple[CommittedFile, ...]
) -> RevisionTables:
    return RevisionTables(manifest_hash, dict(tables), "evm-rpc", network)


def test_a_range_runs_from_the_lowest_start_to_the_highest_end_per_network() -> None:
    ranges = block_ranges(
        [("b", file(3, 7, 9)), ("a", file(1, 1, 4)), ("a", file(2, 5, 9)), ("b", file(4, 10, 12))]
    )
    assert ranges == [
        {"numbers": {"start": 1, "end": 9}, "network": "a", "hash": f"0x{9:064x}",
         "prev_hash": f"0x{0:064x}"},
        {"numbers": {"start": 7, "end": 12}, "network": "b", "hash": f"0x{12:064x}",
         "prev_hash": f"0x{6:064x}"},
    ]  # fmt: skip


def test_new_microbatches_read_only_the_querys_tables_in_block_order() -> None:
    mine = revision(
        "h1",
        "anvil",
        blocks=(file(1, 1, 9), file(2, 10, 19)),
        logs=(file(3, 1, 9), file(4, 10, 19)),
    )
    # Another dataset with the same table names, committing the same ranges at the same time.
    other = revision(
        "h2", "anvil", blocks=(file(5, 1, 9), file(6, 10, 19)), logs=(file(7, 10, 19),)
    )
    assert other.tables  # present in the snapshot, but the query does not read it
    tables = [(mine, "blocks"), (mine, "logs")]
    batches = new_microbatches(tables, seen={1, 3})
    assert [sorted(b.files) for b in batches] == [[2, 4]]
    assert batches[0].ranges == [
        {"numbers": {"start": 10, "end": 19}, "network": "anvil", "hash": f"0x{19:064x}",
         "prev_hash": f"0x{9:064x}"}
    ]  # fmt: skip
    everything = new_microbatches(tables, seen=set())
    assert [sorted(b.files) for b in everything] == [[1, 3], [2, 4]], "one per range, in order"
    assert new_microbatches(tables, seen={1, 2, 3, 4}) == []


def test_the_backfill_covers_what_is_committed_in_bounded_microbatches() -> None:
    mine = revision(
        "h1", "anvil", blocks=(file(1, 1, 9), file(2, 10, 19), file(3, 20, 29), file(4, 30, 99))
    )
    (whole,) = committed([(mine, "blocks")], max_blocks=1000)
    assert whole.files == {1, 2, 3, 4} and whole.ranges[0]["numbers"] == {"start": 1, "end": 99}
    bounded = committed([(mine, "blocks")], max_blocks=20)
    assert [sorted(b.files) for b in bounded] == [[1, 2], [3], [4]], "a large file is its own"
    assert bounded[0].parts == (frozenset({1}), frozenset({2})), "block ranges in block order"
    assert [b.ranges[0]["numbers"] for b in bounded] == [
        {"start": 1, "end": 19}, {"start": 20, "end": 29}, {"start": 30, "end": 99},
    ]  # fmt: skip
    assert committed([(mine, "blocks")], frozenset({1, 2}), 20)[0].files == {3}
    assert committed([(revision("h3", "anvil", blocks=()), "blocks")]) == []


def test_data_batches_are_incomplete_and_a_microbatch_ends_with_an_empty_complete_batch() -> None:
    mine = revision("h1", "anvil", blocks=(file(1, 1, 9),))
    (backfill,) = committed([(mine, "blocks")])
    data = json.loads(metadata(backfill.ranges, False).to_pybytes())
    assert data == {"ranges": backfill.ranges, "ranges_complete": False}
    schema = pa.schema([("block_num", pa.uint64()), ("hash", pa.binary(32))])
    empty, meta = end_of(schema, backfill.ranges)
    assert empty.num_rows == 0 and empty.schema == schema
    assert json.loads(meta.to_pybytes()) == {"ranges": backfill.ranges, "ranges_complete": True}


def test_a_cursor_is_parsed_or_refused_with_what_is_wrong() -> None:
    assert parse_cursor("") is None and parse_cursor("  ") is None
    text = json.dumps({"anvil": {"number": 9, "hash": "0xAB"}, "b": {"number": 0, "hash": "0x1"}})
    assert parse_cursor(text) == {"anvil": (9, "0xab"), "b": (0, "0x1")}
    for bad, message in (
        ("{", "amp-resume is not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"anvil": {"number": "9", "hash": "0x1"}}', "amp-resume['anvil']"),
        ('{"anvil": {"number": -1, "hash": "0x1"}}', "amp-resume['anvil']"),
        ('{"anvil": {"number": 3}}', '"hash": "0x<block hash>"'),
        ('{"anvil": 3}', "amp-resume['anvil'] = 3"),
    ):
        with pytest.raises(CursorError, match=re.escape(message)):
            parse_cursor(bad)


def test_resuming_skips_the_files_up_to_the_cursor_unless_its_hash_is_not_ours() -> None:
    mine = revision("h1", "anvil", blocks=(file(1, 1, 9), file(2, 10, 19), file(3, 20, 29)))
    tables = [(mine, "blocks")]
    assert resumed(tables, {"anvil": (19, f"0x{19:064x}")}) == {1, 2}
    assert committed(tables, resumed(tables, {"anvil": (19, f"0x{19:064x}")}))[0].files == {3}
    assert resumed(tables, {"anvil": (19, "0x" + "ab" * 32)}) == set(), "a fork: start over"
    assert resumed(tables, {"other": (19, "0x00")}) == set(), "another network skips nothing"
    assert resumed(tables, {"anvil": (40, "0x00")}) == {1, 2, 3}
