"""A derived dataset's tables over one block range of its dependencies' committed files.

What a worker materializing a derived dataset computes for each range it commits: every
table's SQL, in build order, over the rows of the range only (each dependency table is read
from the committed files overlapping the range, filtered to `_block_num` in the range;
`self.<table>` is the sibling's output for the same range), as one Arrow batch per table in
its declared schema, with the headers of the range's blocks (from the dependency's `blocks`
table) for the files' metadata and the hash chain.

Every output row carries the `_block_num` of the input row it comes from: a query that
does not select `_block_num` gets it selected first (`with_block_num`), which needs a query
that reads one table and joins none; others must select it themselves.

Only the dependency tables the SQL names are opened (and `blocks`, for the headers); one
that several tables read is read from its files once per range (kept in memory for the
others). Results already in block order and already in their declared types are kept as
they are.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datafusion import DataFrame, SessionConfig, SessionContext, col, lit
from datafusion.catalog import Catalog, Schema

from ampd.datasets.derived import DerivedManifest
from ampd.extract.chunk import BlockHeader, Chunk, linked_headers
from ampd.sql.catalog import CatalogSnapshot, RevisionTables
from ampd.sql.derived_schema import BLOCK_NUM, DerivedSchemaError, js_functions
from ampd.sql.engine import files_table
from ampd.sql.functions import prepare, register_functions, restore_names
from ampd.sql.functions.js import js_udf
from ampd.sql.references import named_columns, significant_tokens, table_references
from ampd.sql.rules import has_joins

__all__ = ["BlockNumUnknown", "covered_through", "evaluate_range", "warm_up", "with_block_num"]


class BlockNumUnknown(DerivedSchemaError):
    """A table whose rows cannot be given their block numbers: it cannot be materialized."""

    def __init__(self, message: str) -> None:
        super().__init__("BLOCK_NUM_UNKNOWN", message)


def with_block_num(sql: str) -> str:
    """`sql` with `_block_num` selected first in its top-level SELECT (after DISTINCT ON
    (...) or ALL). Raises ValueError when it has no top-level SELECT."""
    depth = 0
    tokens = significant_tokens(sql)
    for i, token in enumerate(tokens):
        depth += _depth_change(token)
        if depth == 0 and token.lastgroup == "word" and token.group().lower() == "select":
            at = _after_modifiers(tokens, i + 1)
            return f"{sql[:at]} {BLOCK_NUM}, {sql[at:].lstrip()}"
    raise ValueError("no top-level SELECT")


def _depth_change(token: re.Match) -> int:
    return {"(": 1, ")": -1}.get(token.group(), 0) if token.lastgroup == "other" else 0


def _after_modifiers(tokens: list[re.Match], i: int) -> int:
    """The offset after `SELECT`'s ALL / DISTINCT ON (...) that start at token `i`."""
    rest = tokens[i:]
    first = [t.group().lower() for t in rest[:2]]
    if first[:1] == ["all"]:
        return rest[0].end()
    if first == ["distinct", "on"]:
        depth = 0
        for t in rest[2:]:
            depth += _depth_change(t)
            if depth == 0:
                return t.end()
    return tokens[i - 1].end()


def covered_through(ranges: Mapping[str, Sequence[tuple[int, int]]], start: int) -> int:
    """The last block such that every table has committed files covering `start` to it
    without a gap (`ranges`: table -> its files' (first, last) blocks); start - 1 if none."""
    through = None
    for spans in ranges.values():
        reached = start - 1
        for first, last in sorted(spans):
            if first > reached + 1:
                break
            reached = max(reached, last)
        through = reached if through is None else min(through, reached)
    return start - 1 if through is None else through


def evaluate_range(
    manifest: DerivedManifest,
    dependencies: Mapping[str, RevisionTables],
    snapshot: CatalogSnapshot,
    first: int,
    last: int,
) -> Chunk:
    """Every table of `manifest` over blocks `first..last` of `dependencies` (alias -> the
    revision it names in `snapshot`). Raises DerivedSchemaError for a table whose rows
    cannot carry their block numbers, or for a range without the dependency's blocks."""
    # One partition: the rows come in file order, so in block order (no sort); the chunks a
    # worker has in flight run on threads of their own and use the cores.
    config = SessionConfig().with_default_catalog_and_schema("datafusion", "public")
    ctx = SessionContext(config.with_target_partitions(1))
    catalog = Catalog.memory_catalog()
    reads = _reads(manifest, dependencies)
    for alias, revision in dependencies.items():
        schema = Schema.memory_schema()
        for name, files in revision.tables.items():
            if not reads[(alias, name)] and name != "blocks":
                continue  # no table reads it
            inside = tuple(f for f in files if f.start_block <= last and f.end_block >= first)
            whole = files_table(ctx, name, inside, snapshot, revision.schema(name))
            ctx.register_table(f"__{alias}__{name}", whole)
            frame = ctx.table(f"__{alias}__{name}").filter(
                (col(BLOCK_NUM) >= lit(first)) & (col(BLOCK_NUM) <= lit(last))
            )
            if reads[(alias, name)] > 1:
                # Read from the files once, not by each table: only the columns they name.
                columns = _columns_read(manifest, alias, name, revision.schema(name))
                if columns is not None:
                    frame = frame.select(*(col(f'"{c}"') for c in columns))
                frame = frame.cache()
            schema.register_table(name, frame.into_view())
        catalog.register_schema(alias, schema)
    own = Schema.memory_schema()
    catalog.register_schema("self", own)
    catalog.register_schema("public", Schema.memory_schema())
    ctx.register_catalog_provider("datafusion", catalog)
    register_functions(ctx)
    for fn in manifest.functions.values():
        ctx.register_udf(js_udf(fn))
    for sql_name, fn in js_functions({a: r.functions for a, r in dependencies.items()}):
        ctx.register_udf(js_udf(fn, sql_name))  # a derived dependency's, as `alias.fn`

    known = {(a, t) for a, r in dependencies.items() for t in r.tables}
    key = (manifest.hash, tuple(sorted((a, r.manifest_hash) for a, r in dependencies.items())))
    known |= {("self", t) for t in manifest.tables}
    batches: dict[str, pa.RecordBatch] = {}
    for name in manifest.table_order:
        table = manifest.tables[name]
        rows = _run(ctx, name, table.sql, known, key)
        result = _in_block_order(_as_declared(rows, table.schema))
        batches[name] = (
            result.combine_chunks().to_batches()[0]
            if result.num_rows
            else (pa.RecordBatch.from_pylist([], table.schema))
        )
        own.register_table(name, ctx.from_arrow(result).into_view())
    return Chunk(batches, _headers(ctx, dependencies, first, last))


def warm_up() -> None:
    """Load what a first evaluation loads (a session, the SQL functions, a decode and the
    Arrow kernels behind it) on two rows in memory. A worker calls it once, on a thread,
    when it starts: its first derived chunks then cost what later ones do (cold, the first
    evaluation of the bench's decode took 47 ms against 19 ms warm)."""
    word = b"\x00" * 31 + b"\x01"
    rows = pa.table(
        {
            BLOCK_NUM: pa.array([1, 2], pa.uint64()),
            "topic0": pa.array([word, word], pa.binary(32)),
            "topic1": pa.array([word, None], pa.binary(32)),
            "data": pa.array([word * 2, word], pa.binary()),
        }
    )
    config = SessionConfig().with_default_catalog_and_schema("datafusion", "public")
    ctx = SessionContext(config.with_target_partitions(1))
    frame = ctx.from_arrow(rows).filter(col(BLOCK_NUM) >= lit(1)).select(col(BLOCK_NUM))
    ctx.register_table("warm", ctx.from_arrow(rows).into_view())
    frame.cache()
    register_functions(ctx)
    sql = (
        f"SELECT {BLOCK_NUM}, evm_decode_log(topic1, topic1, topic1, data, "
        "'Warm(address indexed a, uint256 b, int256 c)') AS e "
        f"FROM warm WHERE topic0 = X'{word.hex()}'"
    )
    _in_block_order(restore_names(ctx.sql(prepare(ctx, sql))).to_arrow_table())


def _reads(manifest: DerivedManifest, dependencies: Mapping[str, RevisionTables]) -> Counter:
    """(alias, table) -> how many of the manifest's tables read it."""
    known = {(a, t) for a, r in dependencies.items() for t in r.tables}
    return Counter(
        pair
        for table in manifest.tables.values()
        for pair in set(table_references(table.sql))
        if pair in known
    )


def _columns_read(
    manifest: DerivedManifest, alias: str, table: str, schema: pa.Schema
) -> list[str] | None:
    """The columns of `alias.table` that the manifest's tables reading it name (and
    `_block_num`), in the table's order; None when one of them may read all of them."""
    named = {BLOCK_NUM}
    for derived in manifest.tables.values():
        if (alias, table) in table_references(derived.sql):
            names = named_columns(derived.sql)
            if names is None:
                return None
            named |= names
    return [c for c in schema.names if c in named]


def _as_declared(result: pa.Table, schema: pa.Schema) -> pa.Table:
    """`result` in the declared schema: relabelled when only names or nullability differ
    (planning checked them at registration), cast otherwise."""
    if result.schema.types == schema.types:
        return pa.Table.from_arrays(result.columns, schema=schema)
    return result.cast(schema)


def _in_block_order(result: pa.Table) -> pa.Table:
    """`result` sorted by block, as the files record their ranges (a stable sort, and none
    when the scan already gave the rows in order)."""
    if _sorted(result.column(BLOCK_NUM)):
        return result
    # A scan of several files may hand their batches out of order, each in order itself:
    # putting the batches in order is enough then, and costs no copy.
    batches = [b for b in result.to_batches() if b.num_rows]
    batches.sort(key=lambda b: b.column(BLOCK_NUM)[0].as_py())
    reordered = pa.Table.from_batches(batches, schema=result.schema)
    return reordered if _sorted(reordered.column(BLOCK_NUM)) else result.sort_by(BLOCK_NUM)


def _sorted(column: pa.ChunkedArray) -> bool:
    return len(column) < 2 or pc.all(pc.greater_equal(column[1:], column[:-1])).as_py()


def _run(
    ctx: SessionContext, name: str, sql: str, known: set[tuple[str, str]], key: tuple
) -> pa.Table:
    """The table's rows; `key` names the dependency revisions (what the planning of its
    SQL depends on, beside the SQL): planned once per key, then reused."""
    cached = _PLANS.get((sql, key))
    if cached is None:
        with _PLANNING:  # the chunks in flight at the start wait for one planning
            cached = _PLANS.get((sql, key))
            if cached is None:
                return _plan(ctx, name, sql, known, key).to_arrow_table()
    text, udfs = cached
    for udf in udfs:
        ctx.register_udf(udf)
    return restore_names(ctx.sql(text)).to_arrow_table()


def _plan(
    ctx: SessionContext, name: str, sql: str, known: set[tuple[str, str]], key: tuple
) -> DataFrame:
    """Plan the table's SQL in `ctx` (and remember how, in _PLANS)."""
    recording = _Recording(ctx)
    text = prepare(recording, sql)  # type: ignore[arg-type]
    frame = restore_names(ctx.sql(text))
    if BLOCK_NUM not in frame.schema().names:
        reads = [pair for pair in table_references(sql) if pair in known]
        if has_joins(frame) or len(reads) != 1:
            raise BlockNumUnknown(
                f"table {name!r} reads several tables without selecting {BLOCK_NUM}: select "
                f"the {BLOCK_NUM} its rows belong to",
            )
        text = prepare(recording, with_block_num(sql))  # type: ignore[arg-type]
        frame = restore_names(ctx.sql(text))
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[(sql, key)] = (text, recording.udfs)
    return frame


# (sql, dependency revisions) -> the prepared SQL and the functions it calls: planning a
# table's SQL (prepare's probes, the _block_num check) is done once, not for every range.
_PLANS: dict[tuple, tuple[str, list]] = {}
_MAX_PLANS = 256
_PLANNING = threading.Lock()


class _Recording:
    """A SessionContext that remembers the functions registered in it."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.udfs: list = []

    def register_udf(self, udf) -> None:  # noqa: ANN001
        self.udfs.append(udf)
        self.ctx.register_udf(udf)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.ctx, name)


def _headers(
    ctx: SessionContext, dependencies: Mapping[str, RevisionTables], first: int, last: int
) -> Sequence[BlockHeader]:
    for alias, revision in dependencies.items():
        if "blocks" in revision.tables and "parent_hash" in revision.schema("blocks").names:
            rows = ctx.sql(
                f'SELECT block_num, hash, parent_hash, timestamp FROM "{alias}".blocks'
            ).to_arrow_table()
            if not _sorted(rows.column("block_num")):
                rows = rows.sort_by("block_num")
            numbers = rows.column("block_num").to_numpy()
            if len(numbers) != last - first + 1 or not np.array_equal(
                numbers, np.arange(first, last + 1, dtype=numbers.dtype)
            ):
                raise DerivedSchemaError(
                    "RANGE_NOT_COMMITTED",
                    f"blocks {first}..{last} of {alias!r} are not all committed",
                )
            seconds = pc.divide(rows.column("timestamp").cast(pa.int64()), 1_000_000_000)
            return linked_headers(
                first,
                _words(rows.column("hash")),
                _words(rows.column("parent_hash")),
                seconds.to_numpy(),
            )
    raise DerivedSchemaError("NO_BLOCKS", "no dependency has a blocks table to take headers from")


def _words(column: pa.ChunkedArray) -> np.ndarray:
    """A FixedSizeBinary(32) column as an (n, 32) uint8 array."""
    chunk = column.combine_chunks()
    width = chunk.type.byte_width
    data = np.frombuffer(chunk.buffers()[1], np.uint8)
    return data[chunk.offset * width : (chunk.offset + len(chunk)) * width].reshape(-1, width)
