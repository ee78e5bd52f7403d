"""How a firehose chunk is put together from one stream (providers/firehose/kind.py): the
blocks kept by number, a STEP_UNDO dropping a block and the new branch replacing it, and a
chunk that does not come out complete and hash-linked refused. The stream is a list here:
the logic, not the transport (that is tests/e2e/test_firehose_*.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from ampd.providers.firehose.errors import FirehoseError
from ampd.providers.firehose.kind import _stream_range
from ampd.providers.firehose.proto import ethereum_pb2 as pb
from ampd.providers.firehose.proto import firehose_pb2 as fh


def block(number: int, branch: str = "a", parent_branch: str | None = None) -> pb.Block:
    def h(n: int, b: str) -> bytes:
        return f"{b}{n}".encode().ljust(32, b"\0")

    return pb.Block(
        number=number,
        header=pb.BlockHeader(
            number=number,
            hash=h(number, branch),
            parent_hash=h(number - 1, parent_branch or branch),
        ),
    )


@dataclass
class Item:
    step: int
    block: pb.Block
    cursor: str = ""


class Client:
    url = "http://firehose.test"

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.asked: list[tuple] = []

    async def stream(self, start, stop, *, final_blocks_only=False, cursor=None):  # noqa: ANN001
        self.asked.append((start, stop, final_blocks_only))
        for item in self.items:
            yield item


def run(items: list[Item], first: int, last: int, final: bool = False) -> list[pb.Block]:
    return asyncio.run(_stream_range(Client(items), first, last, final))


def test_a_plain_range():
    got = run([Item(fh.STEP_NEW, block(n)) for n in range(5, 9)], 5, 8)
    assert [b.number for b in got] == [5, 6, 7, 8]


def test_an_undo_mid_stream_is_replaced_by_the_new_branch():
    items = [Item(fh.STEP_NEW, block(n)) for n in (5, 6, 7)]
    items += [Item(fh.STEP_UNDO, block(7)), Item(fh.STEP_UNDO, block(6))]
    items += [Item(fh.STEP_NEW, block(6, "b", "a")), Item(fh.STEP_NEW, block(7, "b"))]
    items += [Item(fh.STEP_NEW, block(8, "b"))]
    got = run(items, 5, 8)
    assert [b.header.hash[:2] for b in got] == [b"a5", b"b6", b"b7", b"b8"]


def test_a_stream_that_ends_short_or_unlinked_is_refused():
    with pytest.raises(FirehoseError, match=r"without blocks \[8\]"):
        run([Item(fh.STEP_NEW, block(n)) for n in (5, 6, 7)], 5, 8)
    items = [Item(fh.STEP_NEW, block(5)), Item(fh.STEP_NEW, block(6, "b"))]  # 6 is not on 5
    with pytest.raises(FirehoseError, match="block 6 does not follow block 5"):
        run(items, 5, 6)


def test_final_blocks_only_is_asked_for_a_finalized_dataset():
    client = Client([Item(fh.STEP_FINAL, block(n)) for n in (1, 2)])
    asyncio.run(_stream_range(client, 1, 2, True))
    assert client.asked == [(1, 2, True)]
