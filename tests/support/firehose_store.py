"""The chain a test Firehose server serves: canonical blocks, forks, finality and cursors.

Blocks are kept as the bytes of a ready `Response.block` field (`google.protobuf.Any` with
type_url `type.googleapis.com/sf.ethereum.type.v2.Block`), serialized once: a stream's
answer is those bytes plus its step and cursor fields, and a `SingleBlockResponse` is those
bytes alone (both messages hold the block in field 1).

The canonical chain is contiguous from its first block; every block ever added stays known
by hash, so a cursor on a block a reorg abandoned can be walked back to the canonical chain.
A block is final when it is at least `final_depth` blocks below the head.

Cursors are opaque to clients: `c1:<step>:<number>:<hash hex>:<final block number>`, in
URL-safe base64. A cursor names the last block a client was sent and its step; a stream
resumed with it continues right after that block (after its parent for a STEP_UNDO cursor).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ampd.providers.firehose.proto import ethereum_pb2, firehose_pb2

from .firehose_blocks import varint

BLOCK_TYPE_URL = "type.googleapis.com/" + ethereum_pb2.Block.DESCRIPTOR.full_name
STEP_NEW, STEP_UNDO, STEP_FINAL = (
    firehose_pb2.STEP_NEW,
    firehose_pb2.STEP_UNDO,
    firehose_pb2.STEP_FINAL,
)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


Tip = tuple[int, bytes]  # a client's last block: (number, hash)

_STEP_FIELDS = {step: varint(6 << 3) + varint(step) for step in (STEP_NEW, STEP_UNDO, STEP_FINAL)}


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a stream was: the block last sent (`number`, `hash`), its `step`, and the final
    block number (`lib`) when it was sent."""

    step: int
    number: int
    hash: bytes
    lib: int

    def encode(self) -> str:
        text = f"c1:{self.step}:{self.number}:{self.hash.hex()}:{self.lib}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Cursor:
        """Parse a cursor; ValueError when it is not one of ours."""
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            version, step, number, block_hash, lib = (
                base64.urlsafe_b64decode(padded).decode().split(":")
            )
            if version != "c1" or int(step) not in _STEP_FIELDS:
                raise ValueError(cursor)
            return cls(int(step), int(number), bytes.fromhex(block_hash), int(lib))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise ValueError(f"invalid cursor {cursor!r}") from None

    @property
    def on_final_block(self) -> bool:
        return self.step == STEP_FINAL or (self.step == STEP_NEW and self.number <= self.lib)


@dataclass(frozen=True, slots=True)
class Entry:
    """One block: its number, hash, parent hash, and its ready Response.block field bytes."""

    number: int
    hash: bytes
    parent_hash: bytes
    frame: bytes

    @classmethod
    def of(cls, block: ethereum_pb2.Block | bytes) -> Entry:
        data = block if isinstance(block, bytes) else block.SerializeToString()
        header = ethereum_pb2.HeaderOnlyBlock.FromString(data).header
        any_bytes = _field(1, BLOCK_TYPE_URL.encode()) + _field(2, data)
        return cls(header.number, header.hash, header.parent_hash, _field(1, any_bytes))

    def response(self, step: int, cursor: str) -> bytes:
        """A serialized `sf.firehose.v2.Response` carrying this block."""
        return self.frame + _STEP_FIELDS[step] + _field(10, cursor.encode())

    def block(self) -> ethereum_pb2.Block:
        any_block = firehose_pb2.SingleBlockResponse.FromString(self.frame).block
        return ethereum_pb2.Block.FromString(any_block.value)


class ChainStore:
    """The canonical chain and every block ever seen. Not thread-safe: the server locks it."""

    def __init__(self, final_depth: int = 0) -> None:
        if final_depth < 0:
            raise ValueError("final_depth must be >= 0")
        self.final_depth = final_depth
        self.canonical: list[Entry] = []
        self.known: dict[bytes, Entry] = {}

    @property
    def first(self) -> int | None:
        return self.canonical[0].number if self.canonical else None

    @property
    def head(self) -> int | None:
        return self.canonical[-1].number if self.canonical else None

    @property
    def lib(self) -> int | None:
        """The highest final block number (None while no block is final)."""
        if not self.canonical:
            return None
        lib = self.canonical[-1].number - self.final_depth
        return lib if lib >= self.canonical[0].number else None

    def at(self, number: int) -> Entry | None:
        """The canonical block `number`, if held."""
        if not self.canonical or not self.first <= number <= self.head:
            return None
        return self.canonical[number - self.first]

    def is_canonical(self, number: int, block_hash: bytes) -> bool:
        entry = self.at(number)
        return entry is not None and entry.hash == block_hash

    def append(self, entries: list[Entry]) -> None:
        """Add blocks on top of the head (each the child of the one before)."""
        for entry in entries:
            head = self.canonical[-1] if self.canonical else None
            if head is not None and (
                entry.number != head.number + 1 or entry.parent_hash != head.hash
            ):
                raise ValueError(
                    f"block {entry.number} (parent 0x{entry.parent_hash.hex()}) does not "
                    f"extend the head {head.number} (0x{head.hash.hex()})"
                )
            self.canonical.append(entry)
            self.known[entry.hash] = entry

    def replace(self, entries: list[Entry]) -> list[Entry]:
        """Make `entries` canonical from their first block's number on; return the abandoned
        canonical blocks, highest first. Final blocks cannot be replaced."""
        if not entries:
            return []
        start = entries[0].number
        if self.first is None or not self.first < start <= self.head + 1:
            raise ValueError(
                f"a fork must start above the first block {self.first} and at most one "
                f"above the head {self.head}; got {start}"
            )
        lib = self.lib
        if lib is not None and start <= lib:
            raise ValueError(f"block {start} is final (final blocks are <= {lib})")
        parent = self.canonical[start - 1 - self.first]
        if entries[0].parent_hash != parent.hash:
            raise ValueError(f"block {start} is not a child of canonical block {parent.number}")
        abandoned = self.canonical[start - self.first :]
        del self.canonical[start - self.first :]
        try:
            self.append(entries)
        except ValueError:
            del self.canonical[start - self.first :]
            self.canonical.extend(abandoned)
            raise
        return abandoned[::-1]

    def resume(self, cursor: str, start: int, final_only: bool) -> tuple[Tip | None, int]:
        """Where a request starts: (the client's last block, or None; the next number to
        send). ValueError for a cursor that is not ours, names an unknown block, or is not
        on a final block when only final blocks are asked for."""
        if cursor:
            at = Cursor.decode(cursor)
            if final_only and not at.on_final_block:
                raise ValueError("cannot stream with final-blocks-only from this non-final cursor")
            entry = self.known.get(at.hash)
            if entry is None or entry.number != at.number:
                raise ValueError("the cursor's block is unknown")
            if at.step == STEP_UNDO:
                return (entry.number - 1, entry.parent_hash), entry.number
            return (entry.number, entry.hash), entry.number + 1
        if start < 0:
            start = max(0, (self.head or 0) + start)
        return None, max(start, self.first or 0)

    def plan(
        self, tip: Tip | None, next_number: int, final_only: bool, stop: int, limit: int
    ) -> tuple[list[bytes], Tip | None, int, bool]:
        """Up to `limit` answers for a client at `tip` expecting `next_number`: undos of its
        blocks that are no longer canonical (down to the common ancestor), then the next
        new (or final) blocks up to the head (or the final block) and `stop`. Returns them
        with the client's new tip and next number, and whether the stop block was sent."""
        batch: list[bytes] = []
        while (
            not final_only
            and tip is not None
            and len(batch) < limit
            and not self.is_canonical(*tip)
            and tip[0] >= (self.first or 0)
            and tip[1] in self.known
        ):
            entry = self.known[tip[1]]
            batch.append(entry.response(STEP_UNDO, self.cursor(STEP_UNDO, entry)))
            tip, next_number = (entry.number - 1, entry.parent_hash), entry.number
        last = self.lib if final_only else self.head
        if stop:
            last = stop if last is None else min(last, stop)
        step = STEP_FINAL if final_only else STEP_NEW
        while last is not None and next_number <= last and len(batch) < limit:
            entry = self.at(next_number)
            batch.append(entry.response(step, self.cursor(step, entry)))
            tip, next_number = (entry.number, entry.hash), next_number + 1
        return batch, tip, next_number, bool(stop) and next_number > stop

    def cursor(self, step: int, entry: Entry) -> str:
        lib = self.lib
        return Cursor(step, entry.number, entry.hash, -1 if lib is None else lib).encode()
