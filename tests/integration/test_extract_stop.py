"""A stop request ends an extraction promptly even while its provider is down, and what
was written before is committed, not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ampd.extract.engine import Tuning, extract_range, unless_stopped
from ampd.providers.config import parse_provider
from ampd.providers.evm_rpc import ProviderPool
from ampd.providers.evm_rpc.in_process import InProcessSource
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.parquet_writer import ClosedFile
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
