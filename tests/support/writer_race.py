"""Cancel a TableWriter's file work mid-write, then abort it: run as a child process, so
that a crash inside pyarrow shows as the child's exit status instead of killing pytest.

    python -m support.writer_race gated DATA_DIR
    python -m support.writer_race stress DATA_DIR N

The Parquet writer's sink is the staging file behind a gate: once the footer's first bytes
arrive, the thread inside `ParquetWriter` blocks in `write` until this script opens the gate,
so the cancel and the abort land while pyarrow is writing, every time. `stress` does the
same N times on the real writer (a file on disk), cancelling at varied moments of a 0.1-0.3 s
close. Each prints one JSON line of what it saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ampd.storage import parquet_writer
from ampd.storage.parquet_writer import TableWriter, WriterSettings
from ampd.storage.paths import TableLocation, file_name, new_revision
from ampd.storage.store import LocalStore

SCHEMA = pa.schema([("block_num", pa.uint64()), ("payload", pa.binary())])


class Block:
    def __init__(self, number: int) -> None:
        self.number = number
        self.hash = f"0x{number + 1:064x}"
        self.parent_hash = f"0x{number:064x}"
        self.timestamp = number


class GatedFile:
    """A file whose writes block, once `armed`, until the gate opens."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed by pyarrow through close()
        self.armed = False
        self.blocked = threading.Event()
        self.gate = threading.Event()

    def write(self, data: bytes) -> int:
        if self.armed:
            self.blocked.set()
            self.gate.wait()
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


class GatedWriter(TableWriter):
    """The real writer, with its staging file behind a gate."""

    sink: GatedFile | None = None

    def _open(self, first):  # noqa: ANN001, ANN202 - mirrors TableWriter._open
        staging = self.store.new_staging_file(".parquet")
        self.sink = GatedFile(staging.path)
        sink = pa.PythonFile(self.sink, mode="w")
        writer = pq.ParquetWriter(sink, self.schema, compression="zstd")
        return parquet_writer._OpenFile(
            staging, writer, sink, file_name(first.number), first, self._clock()
        )


async def race(root: Path) -> dict[str, object]:
    store = LocalStore(root)
    location = TableLocation("ns", "ds", "t", new_revision())
    writer = GatedWriter(store, location, SCHEMA, "net", WriterSettings())
    rows = 20_000
    payload = pa.array([os.urandom(64) for _ in range(rows)], pa.binary())
    batch = pa.record_batch([pa.array(np.zeros(rows, dtype=np.uint64)), payload], schema=SCHEMA)
    await writer.write(batch, [Block(0)])
    assert writer.sink is not None
    writer.sink.armed = True
    closing = asyncio.create_task(writer.close_file())
    await asyncio.to_thread(writer.sink.blocked.wait, 30)  # a thread is inside pyarrow now
    closing.cancel()
    aborting = asyncio.create_task(writer.abort())
    await asyncio.sleep(0.3)
    abort_waited = not aborting.done()  # it must wait for the write in flight
    writer.sink.gate.set()
    await aborting
    staging = sorted(p.name for p in (root / ".staging").iterdir())
    return {
        "abort_waited": abort_waited,
        "staging_left": staging,
        "objects": len(await store.list()),
    }


async def stress(root: Path, runs: int) -> dict[str, object]:
    store = LocalStore(root)
    rows = 100_000
    payload = pa.array([os.urandom(64) for _ in range(rows)], pa.binary())
    batch = pa.record_batch([pa.array(np.zeros(rows, dtype=np.uint64)), payload], schema=SCHEMA)
    handed_out = 0
    for i in range(runs):
        location = TableLocation("ns", "ds", "t", new_revision())
        settings = WriterSettings(compression="zstd(9)", max_row_group_bytes=1 << 30)
        writer = TableWriter(store, location, SCHEMA, "net", settings)
        await writer.write(batch, [Block(0)])
        closing = asyncio.create_task(writer.close_file())
        await asyncio.sleep(0.01 * (i % 12))
        closing.cancel()
        (outcome,) = await asyncio.gather(closing, return_exceptions=True)
        handed_out += outcome is not None and not isinstance(outcome, BaseException)
        await writer.abort()
    staging = sorted(p.name for p in (root / ".staging").iterdir())
    objects = len(await store.list())
    return {"runs": runs, "staging_left": staging, "objects": objects, "handed_out": handed_out}


def main() -> None:
    mode, root = sys.argv[1], Path(sys.argv[2])
    result = asyncio.run(race(root) if mode == "gated" else stress(root, int(sys.argv[3])))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
