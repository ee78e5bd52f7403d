"""A stop request ends an extraction promptly even while its provider is down, and what
was written before is committed, not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from ampd.extract.chunk import Chunk
from ampd.extract.engine import Tuning, extract_range, unless_stopped
from ampd.providers.config import parse_provider
from ampd.providers.evm_rpc import ProviderPool
from ampd.providers.evm_rpc.in_process import InProcessSource
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.parquet_writer import ClosedFile, WriterSettings
from ampd.storage.store import open_store
from support.anvil import Anvil
from support.chain import ChainInfo, build_varied_chain
from support.faultproxy import Fault, FaultProxy
from support.targets import target_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Anvil, ChainInfo]]:
    with Anvil() as anvil:
        yield anvil, build_varied_chain(anvil)


async def test_stop_while_the_provider_is_down_commits_what_is_written(
    node: tuple[Anvil, ChainInfo], tmp_path: Path
) -> None:
    anvil, chain = node
    end = chain.numbers[-1]
    target = target_for(open_store(tmp_path / "data"))
    groups: list[list[ClosedFile]] = []
    stop = asyncio.Event()
    written: list[int] = []

    async def commit(group: list[ClosedFile]) -> None:
        groups.append(group)

    with FaultProxy(anvil.url) as proxy:

        def progress(done: int, rows: dict[str, int]) -> None:
            written.append(done)
            if done >= 4:  # from here on, the provider answers every request with 503
                proxy.set_faults(Fault("http_503"))

        config = parse_provider("down", {"kind": "evm-rpc", "network": "anvil", "url": proxy.url})
        async with ProviderPool([config], max_attempts=None, backoff_cap=0.2) as pool:
            run = asyncio.ensure_future(
                extract_range(
                    InProcessSource(pool),
                    target,
                    0,
                    end,
                    commit,
                    stop=stop,
                    progress=progress,
                    tuning=Tuning(chunk_blocks=2, chunks_in_flight=1),
                )
            )
            while proxy.injected["http_503"] < 3:  # retrying a dead provider
                assert not run.done()
                await asyncio.sleep(0.05)
            stop.set()
            last = await asyncio.wait_for(run, timeout=30)
    assert last == written[-1] - 1 < end  # blocks 0..last were written, then it stopped
    (group,) = groups
    assert sorted(f.table for f in group) == sorted(TABLES)
    assert {(f.start_block, f.end_block) for f in group} == {(0, last)}


async def test_unless_stopped() -> None:
    stop = asyncio.Event()
    assert await unless_stopped(asyncio.sleep(0, "done"), stop) == "done"
    assert await unless_stopped(asyncio.sleep(0, "no stop"), None) == "no stop"
    slow = asyncio.ensure_future(asyncio.sleep(30))
    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await unless_stopped(slow, stop) is None
    assert not slow.done()  # left to the caller
    slow.cancel()
    with pytest.raises(ZeroDivisionError):  # a failure is the caller's, as with await

        async def fail() -> None:
            raise ZeroDivisionError

        await unless_stopped(fail(), asyncio.Event())


class _WaitingSource:
    """Every chunk waits for ever; which of them were cancelled is kept."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        self.started.append(numbers[0])
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(numbers[0])
            raise
        raise AssertionError("unreachable")


async def test_a_cancelled_run_stops_every_fetch_it_started(tmp_path: Path) -> None:
    """A run cancelled from outside (its segment moved to another worker) stops the fetch
    it was waiting for too, not only those queued behind it: a fetch left running would
    go on taking the provider's limits from the runs that are still wanted."""
    source = _WaitingSource()
    run = asyncio.ensure_future(
        extract_range(
            source,
            target_for(open_store(tmp_path / "data")),
            0,
            99,
            lambda group: asyncio.sleep(0),
            stop=asyncio.Event(),  # as a worker runs it: a stop could come too
            tuning=Tuning(chunk_blocks=10, chunks_in_flight=2),
        )
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert source.started[0] == 0 and not run.done()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0)
    assert sorted(source.cancelled) == sorted(source.started)


class _HeldSource:
    """Its provider's chunks, but the second one only once `release` is set."""

    def __init__(self, inner: InProcessSource, first: int) -> None:
        self.inner, self.first = inner, first
        self.release = asyncio.Event()

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        if numbers[0] > self.first:
            await self.release.wait()
        return await self.inner.chunk(numbers)


async def test_written_blocks_are_committed_on_time_while_the_next_chunk_is_slow(
    node: tuple[Anvil, ChainInfo], tmp_path: Path
) -> None:
    """Files are closed for their age (`flush_interval_secs`) while the next chunk is still
    on its way, so what is written is committed even if no more blocks come for a while (a
    rate-limited provider; a worker that is then killed would lose it all)."""
    anvil, chain = node
    end = chain.numbers[-1]
    groups: list[list[ClosedFile]] = []

    async def commit(group: list[ClosedFile]) -> None:
        groups.append(group)

    target = target_for(open_store(tmp_path / "data"))
    target = replace(target, writer=WriterSettings(flush_interval_secs=0.2))
    config = parse_provider("local", {"kind": "evm-rpc", "network": "anvil", "url": anvil.url})
    async with ProviderPool([config]) as pool:
        source = _HeldSource(InProcessSource(pool), first=0)
        run = asyncio.ensure_future(
            extract_range(
                source, target, 0, end, commit, tuning=Tuning(chunk_blocks=2, chunks_in_flight=1)
            )
        )
        for _ in range(200):  # the first chunk's files are committed without the second
            if groups or run.done():
                break
            await asyncio.sleep(0.05)
        assert not run.done()
        assert [{(f.start_block, f.end_block) for f in g} for g in groups] == [{(0, 1)}]
        source.release.set()
        assert await asyncio.wait_for(run, timeout=60) == end
    ranges = sorted({(f.start_block, f.end_block) for g in groups for f in g})
    assert ranges[0] == (0, 1) and ranges[-1][1] == end
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
