"""Writes one table revision's rows into Parquet files, block range by block range.

A TableWriter takes record batches for consecutive blocks, together with the blocks they
cover (every block is accounted for, with or without rows). It buffers up to one row group
in memory, writes row groups into a staging file as it goes, and closes the file (footer
metadata, then into the store) when the file reaches `max_file_bytes`, when the writer's
last block is written, when `flush_interval_secs` have passed with rows in the file, or when
the caller asks (`close_file`, near the chain head). Memory stays bounded by the row group
size whatever the length of the range.

The file has one owner at a time. Work on it (opening, writing a row group, the footer, the
put into the store) runs as one task at a time, shielded from the caller's cancellation: a
cancelled caller leaves the thread inside the Parquet writer to finish, and the next call,
`abort` included, waits for it before touching the file. Closing a writer from one thread
while another writes to it crashes the process.
"""

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ampd.storage.file_metadata import BlockRange, FileMetadata, read_footer
from ampd.storage.footer import InvalidFooter, footer_bytes
from ampd.storage.paths import TableLocation, file_name
from ampd.storage.store import ObjectStore, StagingFile

T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB

_COMPRESSION = re.compile(r"^(zstd|gzip|brotli|lz4|snappy|uncompressed)(?:\((-?\d+)\))?$")
_LEVELS = {"zstd": (1, 22), "gzip": (0, 9), "brotli": (0, 11)}


class InvalidCompression(ValueError):
    """A `[writer] compression` value we cannot write."""


def parse_compression(spec: str) -> tuple[str, int | None]:
    """`"zstd(3)"` -> `("zstd", 3)`, `"lz4"` -> `("lz4", None)`, `"uncompressed"` -> `("none", None)`.

    Accepts Amp's values (`zstd(N)` with N in 1..22, `zstd`, `lz4`, `gzip`, `brotli`, `snappy`,
    `uncompressed`, any case) plus `gzip(N)` and `brotli(N)`. Raises InvalidCompression.
    """
    text = spec.strip().lower() if isinstance(spec, str) else ""
    match = _COMPRESSION.match(text)
    if match is None:
        raise InvalidCompression(
            f"unknown compression {spec!r}; expected zstd(N), lz4, gzip, brotli, snappy "
            "or uncompressed"
        )
    codec, level_text = match.group(1), match.group(2)
    if level_text is None:
        return ("none" if codec == "uncompressed" else codec), (1 if codec == "zstd" else None)
    if codec not in _LEVELS:
        raise InvalidCompression(f"compression {spec!r}: {codec} takes no level")
    low, high = _LEVELS[codec]
    level = int(level_text)
    if not low <= level <= high:
        raise InvalidCompression(f"compression {spec!r}: {codec} level must be {low}..{high}")
    return codec, level


@dataclass(frozen=True)
class WriterSettings:
    """The `[writer]` config section, in bytes and seconds."""

    compression: str = "zstd(1)"
    max_row_group_bytes: int = 512 * MiB
    max_file_bytes: int = 2 * GiB
    flush_interval_secs: float = 600.0
    # None: a file's rows are encoded when it closes (one row group, unless past
    # max_row_group_bytes). A number: once a write leaves at least this many rows
    # buffered, they are encoded as a row group in the background, while the caller makes
    # its next batch (what a derived dataset's chunks, tens of thousands of rows, use).
    row_group_rows: int | None = None

    def __post_init__(self) -> None:
        parse_compression(self.compression)
        if self.max_row_group_bytes <= 0 or self.max_file_bytes <= 0:
            raise ValueError("max_row_group_bytes and max_file_bytes must be positive")
        if self.flush_interval_secs <= 0:
            raise ValueError("flush_interval_secs must be positive")
        if self.row_group_rows is not None and self.row_group_rows <= 0:
            raise ValueError("row_group_rows must be positive")

    @classmethod
    def from_config(cls, writer: Any) -> "WriterSettings":
        """From a config object with `compression`, `max_row_group_mb`, `bytes` and
        `segment_flush_interval_secs` (the `[writer]` section)."""
        return cls(
            compression=writer.compression,
            max_row_group_bytes=int(writer.max_row_group_mb) * MiB,
            max_file_bytes=int(writer.bytes),
            flush_interval_secs=float(writer.segment_flush_interval_secs),
        )


class Block(Protocol):
    """What the writer needs to know about each block (e.g. convert.BlockHeader)."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int


@dataclass(frozen=True)
class ClosedFile:
    """A finished file, in the store, ready to be committed to the metadata DB."""

    table: str
    start_block: int
    end_block: int
    prev_hash: str  # parent hash of the first block, 0x hex
    hash: str  # hash of the last block, 0x hex
    timestamp: int | None  # last block's timestamp, seconds
    rows: int
    bytes: int  # object size
    key: str
    url: str
    file_name: str
    metadata: dict[str, Any]  # the footer's nozzle_metadata
    footer: bytes = b""  # the file's footer bytes (storage/footer.py); empty if unknown


class _OpenFile:
    """The file being written: a staging file, its writer and what it covers so far."""

    def __init__(
        self,
        staging: StagingFile,
        writer: pq.ParquetWriter,
        sink: pa.NativeFile,
        name: str,
        first: Block,
        opened_at: float,
    ):
        self.staging = staging
        self.path = staging.path
        self.writer = writer
        self.sink = sink
        self.name = name
        self.first = first
        self.last = first
        self.opened_at = opened_at
        self.rows = 0
        self.buffer: list[pa.RecordBatch] = []
        self.buffered_bytes = 0
        self.buffered_rows = 0
        self.flushing_bytes = 0  # handed to a background row group, not yet written
        self.flushed_arrow_bytes = 0
        self.written_bytes = 0  # the sink's size after the last row group
        self.finished = False  # footer written; only the put into the store is left
        self.footer = b""  # the footer's bytes, read back from the staging file
        self.stored: tuple[str, int] | None = None  # (key, size) once the put succeeded

    def estimated_bytes(self) -> int:
        written = self.written_bytes
        # Scale the unencoded buffer by the compression seen so far (1:1 before any).
        ratio = written / self.flushed_arrow_bytes if self.flushed_arrow_bytes else 1.0
        return written + int((self.buffered_bytes + self.flushing_bytes) * ratio)

    def take_buffer(self) -> tuple[list[pa.RecordBatch], int]:
        """The buffered batches and their bytes, leaving the buffer empty."""
        batches, nbytes = self.buffer, self.buffered_bytes
        self.buffer, self.buffered_bytes, self.buffered_rows = [], 0, 0
        return batches, nbytes


class TableWriter:
    """Writes one table of one revision. Not safe for concurrent calls: await each in turn."""

    def __init__(
        self,
        store: ObjectStore,
        location: TableLocation,
        schema: pa.Schema,
        network: str,
        settings: WriterSettings = WriterSettings(),
        *,
        end_block: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.location = location
        self.schema = schema
        self.network = network
        self.settings = settings
        # May be lowered between writes (a split), never below the last block written.
        self.end_block = end_block
        self._clock = clock
        self._codec, self._level = parse_compression(settings.compression)
        self._file: _OpenFile | None = None
        self._previous: Block | None = None  # last block written, across files
        self._busy: asyncio.Task[Any] | None = None  # the file work in flight, if any
        self._flushing: asyncio.Future[None] | None = None  # a background row group

    @property
    def table(self) -> str:
        return self.location.table

    @property
    def current_range(self) -> tuple[int, int] | None:
        """First and last block of the open file, or None."""
        f = self._file
        return None if f is None else (f.first.number, f.last.number)

    @property
    def rows(self) -> int:
        return 0 if self._file is None else self._file.rows

    @property
    def estimated_bytes(self) -> int:
        return 0 if self._file is None else self._file.estimated_bytes()

    @property
    def flush_due(self) -> bool:
        """True once the open file has rows and is older than the flush interval."""
        f = self._file
        return (
            f is not None
            and f.rows > 0
            and self._clock() - f.opened_at >= self.settings.flush_interval_secs
        )

    @property
    def flush_due_in(self) -> float | None:
        """Seconds until the open file is due to be closed for its age (0 if it is), or
        None while no file with rows is open."""
        f = self._file
        if f is None or f.rows == 0:
            return None
        return max(0.0, f.opened_at + self.settings.flush_interval_secs - self._clock())

    async def write(
        self, batch: pa.RecordBatch | pa.Table | None, blocks: Sequence[Block]
    ) -> ClosedFile | None:
        """Add the rows of `blocks` (consecutive, following the previous call's) to the file.

        `batch` may be None or empty when the blocks have no rows in this table. Returns the
        file when this call closed it. Raises ValueError for blocks out of order, a broken
        hash chain, rows outside the blocks, a schema mismatch or blocks past `end_block`.
        """
        if not blocks:
            if batch is not None and batch.num_rows:
                raise ValueError(f"{self.table}: rows given without the blocks they belong to")
            return None
        self._check_blocks(blocks)
        rows = self._check_batch(batch, blocks)
        self._raise_failed_flush()
        if self._file is None:
            await self._exclusive(self._open_file, blocks[0])
        f = self._file
        assert f is not None
        if rows:
            for b in batch.to_batches() if isinstance(batch, pa.Table) else [batch]:
                f.buffer.append(b)
                f.buffered_bytes += b.nbytes
            f.rows += rows
            f.buffered_rows += rows
            eager = self.settings.row_group_rows
            if f.buffered_bytes >= self.settings.max_row_group_bytes:
                await self._exclusive(asyncio.to_thread, self._flush_row_group, f)
            elif eager is not None and f.buffered_rows >= eager:
                await self._flush_in_background(f)
        f.last = blocks[-1]
        self._previous = blocks[-1]
        if (
            (self.end_block is not None and f.last.number >= self.end_block)
            or f.estimated_bytes() >= self.settings.max_file_bytes
            or self.flush_due
        ):
            return await self.close_file()
        return None

    async def close_file(self) -> ClosedFile | None:
        """Close the open file (it may have no rows) and put it into the store; None if no
        file is open. On failure the staging file stays until `abort`; if the caller is
        cancelled, the work in flight finishes and `abort` deletes what it left."""
        await self._wait_idle()
        self._raise_failed_flush()
        f = self._file
        if f is None:
            return None
        meta = FileMetadata(
            table=self.table,
            filename=f.name,
            ranges=(
                BlockRange(
                    start=f.first.number,
                    end=f.last.number,
                    network=self.network,
                    hash=_hex(f.last.hash),
                    prev_hash=_hex(f.first.parent_hash),
                    timestamp=f.last.timestamp,
                ),
            ),
        )
        key, size = await self._exclusive(self._store_file, f, meta)
        self._file = None  # handed out: from here on the caller owns the object
        return _closed_file(self.store, key, meta, f.rows, size, f.footer)

    async def abort(self) -> None:
        """Drop the open file: wait for the work in flight, then delete the staging file, or
        the object if it was put into the store but never handed out by `close_file`."""
        # Shielded: a second cancellation must not cut the cleanup short.
        await asyncio.shield(asyncio.ensure_future(self._drop()))

    # -- internals ----------------------------------------------------------------------

    async def _exclusive(self, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `work` as this writer's only file work, finishing even if we are cancelled."""
        await self._wait_idle()
        self._busy = asyncio.ensure_future(work(*args))
        return await asyncio.shield(self._busy)

    async def _wait_idle(self) -> None:
        busy = self._busy
        if busy is not None:
            if not busy.done():
                await asyncio.wait([busy])
            if not busy.cancelled():
                busy.exception()  # seen: a cancelled caller's failure is not news to anyone

    async def _flush_in_background(self, f: _OpenFile) -> None:
        """Encode the buffered rows as a row group on a thread, not waiting for it: the
        next file work waits (`_wait_idle`), and the next write or close raises its error."""
        await self._wait_idle()
        self._raise_failed_flush()
        batches, nbytes = f.take_buffer()
        f.flushing_bytes = nbytes
        self._busy = self._flushing = asyncio.ensure_future(
            asyncio.to_thread(self._write_row_group, f, batches, nbytes)
        )

    def _raise_failed_flush(self) -> None:
        flushing = self._flushing
        if flushing is None or not flushing.done():
            return
        self._flushing = None
        if not flushing.cancelled() and flushing.exception() is not None:
            raise flushing.exception()  # type: ignore[misc]

    async def _open_file(self, first: Block) -> None:
        self._file = await asyncio.to_thread(self._open, first)

    async def _store_file(self, f: _OpenFile, meta: FileMetadata) -> tuple[str, int]:
        await asyncio.to_thread(self._finish, f, meta)
        if f.stored is None:
            key = self.location.key(f.name)
            f.stored = (key, await self.store.put_file(f.path, key))
            f.staging.release()
        return f.stored

    async def _drop(self) -> None:
        await self._wait_idle()
        f, self._file = self._file, None
        if f is None:
            return
        if f.stored is not None:
            await self.store.delete(f.stored[0])
        else:
            await asyncio.to_thread(_discard, f)

    def _open(self, first: Block) -> _OpenFile:
        staging = self.store.new_staging_file(".parquet")
        try:
            sink = pa.OSFile(str(staging.path), "wb")
            writer = pq.ParquetWriter(
                sink,
                self.schema,
                compression=self._codec,
                compression_level=self._level,
                # Lists keep Arrow's `item` name (Amp's files read back that way), not `element`.
                use_compliant_nested_type=False,
                write_page_index=True,
            )
        except BaseException:
            staging.discard()
            raise
        return _OpenFile(staging, writer, sink, file_name(first.number), first, self._clock())

    def _flush_row_group(self, f: _OpenFile) -> None:
        if f.buffer:
            self._write_row_group(f, *f.take_buffer())

    def _write_row_group(self, f: _OpenFile, batches: list[pa.RecordBatch], nbytes: int) -> None:
        f.writer.write_table(pa.Table.from_batches(batches, schema=self.schema))
        f.flushed_arrow_bytes += nbytes
        f.written_bytes = f.sink.tell()
        f.flushing_bytes = 0

    def _finish(self, f: _OpenFile, meta: FileMetadata) -> None:
        if f.finished:  # a retry after a failed put
            return
        self._flush_row_group(f)
        f.writer.add_key_value_metadata(meta.key_value_metadata())
        f.writer.close()
        if not f.sink.closed:
            f.sink.close()
        f.footer = footer_bytes(f.path)
        f.finished = True

    def _check_blocks(self, blocks: Sequence[Block]) -> None:
        previous = self._previous
        # Blocks known to be consecutive and linked (extract/chunk.py LinkedHeaders): only
        # the first is checked against the block before them.
        for block in blocks[:1] if getattr(blocks, "linked", False) else blocks:
            if previous is not None:
                if block.number != previous.number + 1:
                    raise ValueError(
                        f"{self.table}: block {block.number} does not follow block {previous.number}"
                    )
                # Same text is the common case; else compare normalised (case, bytes or str).
                if block.parent_hash != previous.hash and _hex(block.parent_hash) != _hex(
                    previous.hash
                ):
                    raise ValueError(
                        f"{self.table}: block {block.number}'s parent hash {block.parent_hash} "
                        f"is not block {previous.number}'s hash {previous.hash}"
                    )
            previous = block
        if self.end_block is not None and blocks[-1].number > self.end_block:
            raise ValueError(
                f"{self.table}: block {blocks[-1].number} is past the writer's last block {self.end_block}"
            )

    def _check_batch(self, batch: pa.RecordBatch | pa.Table | None, blocks: Sequence[Block]) -> int:
        if batch is None or batch.num_rows == 0:
            return 0
        if not batch.schema.equals(self.schema):
            raise ValueError(f"{self.table}: batch schema differs from the table's")
        low, high = pc.min_max(batch.column(0)).values()
        if low.as_py() < blocks[0].number or high.as_py() > blocks[-1].number:
            raise ValueError(
                f"{self.table}: rows for blocks {low}..{high} outside the blocks given "
                f"({blocks[0].number}..{blocks[-1].number})"
            )
        return batch.num_rows


async def read_closed_file(store: ObjectStore, key: str) -> ClosedFile:
    """Rebuild a ClosedFile from the object alone (to register a file found in storage).

    Raises ObjectNotFound, or InvalidFileMetadata for a file without Amp metadata.
    """
    size = await store.size(key)

    def read() -> tuple[FileMetadata, int, bytes]:
        with store.open(key) as source:
            meta, rows = read_footer(source)
            try:
                return meta, rows, footer_bytes(source)
            except InvalidFooter:  # readable by pyarrow after all: the cache does without
                return meta, rows, b""

    meta, rows, footer = await asyncio.to_thread(read)
    return _closed_file(store, key, meta, rows, size, footer)


def _closed_file(
    store: ObjectStore, key: str, meta: FileMetadata, rows: int, size: int, footer: bytes
) -> ClosedFile:
    r = meta.range
    return ClosedFile(
        table=meta.table,
        start_block=r.start,
        end_block=r.end,
        prev_hash=r.prev_hash,
        hash=r.hash,
        timestamp=r.timestamp,
        rows=rows,
        bytes=size,
        key=key,
        url=store.url(key),
        file_name=key.rsplit("/", 1)[-1],
        metadata=meta.nozzle_metadata(),
        footer=footer,
    )


def _discard(f: _OpenFile) -> None:
    if not f.finished:
        try:
            f.writer.close()
        except (OSError, pa.ArrowException):  # the file is thrown away; deleting it matters
            pass
    if not f.sink.closed:
        f.sink.close()
    f.staging.discard()


def _hex(value: str | bytes) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    text = value.lower()
    return text if text.startswith("0x") else "0x" + text
