"""A split while an extraction runs: it ends before the split block, having requested no
block from there on, with every block up to it committed once, in order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ampd.extract.engine import RangeBounds, Tuning, extract_range
from ampd.providers.config import parse_provider
from ampd.providers.evm_rpc import ProviderPool
from ampd.providers.evm_rpc.blocks import RawBlock
from ampd.providers.evm_rpc.in_process import InProcessSource
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.parquet_writer import ClosedFile
from ampd.storage.store import open_store
from support.anvil import Anvil
from support.targets import target_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        node.mine(130)
        yield node


class Recording:
    """The provider pool, noting every block number asked for."""

    def __init__(self, pool: ProviderPool) -> None:
        self.pool = pool
        self.requested: list[int] = []

    async def fetch_blocks(self, numbers: Sequence[int]) -> list[RawBlock]:
        self.requested.extend(numbers)
        return await self.pool.fetch_blocks(numbers)


async def test_split_mid_run_ends_before_the_split_block(anvil: Anvil, tmp_path: Path) -> None:
    end = 119
    target = target_for(open_store(tmp_path / "data"))
    groups: list[list[ClosedFile]] = []
    bounds = RangeBounds(end)
    split_at: list[int] = []

    async def commit(group: list[ClosedFile]) -> None:
        groups.append(group)

    def progress(done: int, rows: dict[str, int]) -> None:
        if not split_at:
            first = bounds.first_unrequested
            assert first is not None and first < end
            point = bounds.split(10)
            assert point is not None and point > first
            split_at.append(point)

    config = parse_provider("node", {"kind": "evm-rpc", "network": "anvil", "url": anvil.url})
    async with ProviderPool([config]) as pool:
        source = Recording(pool)
        last = await extract_range(
            InProcessSource(source),
            target,
            0,
            end,
            commit,
            bounds=bounds,
            progress=progress,
            tuning=Tuning(chunk_blocks=5, chunks_in_flight=2),
        )
    (point,) = split_at
    assert last == point - 1 == bounds.end
    assert sorted(source.requested) == list(range(point)), "each block up to the split, once"
    spans = [(g[0].start_block, g[0].end_block) for g in groups]
    assert spans[0][0] == 0 and spans[-1][1] == point - 1
    for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False):
        assert b_start == a_end + 1
    for group in groups:
        assert sorted(f.table for f in group) == sorted(TABLES)


async def test_bounds_must_end_where_the_range_does(anvil: Anvil, tmp_path: Path) -> None:
    target = target_for(open_store(tmp_path / "data"))

    async def commit(group: list[ClosedFile]) -> None:
        raise AssertionError("nothing to commit")

    with pytest.raises(ValueError, match="bounds end at 5, not at 9"):
        await extract_range(InProcessSource(anvil), target, 0, 9, commit, bounds=RangeBounds(5))
