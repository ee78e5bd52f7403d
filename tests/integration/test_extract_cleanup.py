"""Nothing an interrupted extraction put into the store outlives it uncommitted: files whose
commit never started are deleted, and those of a commit cut short are settled (deleted when
the target says they did not land, handed on when it cannot tell)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ampd.extract.engine import ExtractionTarget, Tuning, extract_range
from ampd.providers.config import parse_provider
from ampd.providers.evm_rpc import ProviderPool
from ampd.providers.evm_rpc.in_process import InProcessSource
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.parquet_writer import ClosedFile
from ampd.storage.store import LocalStore
from support.anvil import Anvil
from support.chain import ChainInfo, build_varied_chain
from support.targets import target_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Anvil, ChainInfo]]:
    with Anvil() as anvil:
        yield anvil, build_varied_chain(anvil)


class LogsPutFails(LocalStore):
    """Puts of the logs table fail: the blocks and transactions files of the group are
    already in the store by then, and their commit is never attempted."""

    async def put_file(self, local_path, key):  # noqa: ANN001
        if "/logs/" in key:
            raise OSError("store refused the logs file")
        return await super().put_file(local_path, key)


async def extract(anvil: Anvil, target: ExtractionTarget, end: int, on_commit) -> asyncio.Task:  # noqa: ANN001
    config = parse_provider("node", {"kind": "evm-rpc", "network": "anvil", "url": anvil.url})
    pool = ProviderPool([config])

    async def run() -> int:
        async with pool:
            return await extract_range(
                InProcessSource(pool),
                target,
                0,
                end,
                on_commit,
                tuning=Tuning(chunk_blocks=2, chunks_in_flight=1),
            )

    return asyncio.ensure_future(run())


async def test_files_whose_commit_never_started_are_deleted(node, tmp_path: Path) -> None:  # noqa: ANN001
    anvil, chain = node
    store = LogsPutFails(tmp_path / "data")
    committed: list[list[ClosedFile]] = []

    async def on_commit(group: list[ClosedFile]) -> None:
        committed.append(group)

    run = await extract(anvil, target_for(store), 1, on_commit)
    with pytest.raises(OSError, match="refused the logs file"):
        await run
    assert committed == []
    assert await store.list() == []
    assert list((tmp_path / "data" / ".staging").iterdir()) == []


async def cancelled_mid_commit(anvil: Anvil, target: ExtractionTarget) -> list[str]:
    """Run until the first commit starts, cancel it there; returns the group's keys."""
    in_commit = asyncio.Event()
    keys: list[str] = []

    async def on_commit(group: list[ClosedFile]) -> None:
        keys.extend(f.key for f in group)
        in_commit.set()
        await asyncio.Event().wait()  # a commit that never answers

    run = await extract(anvil, target, 1, on_commit)
    await asyncio.wait_for(in_commit.wait(), 30)
    assert len(await target.store.list()) == len(TABLES)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    return keys


async def test_a_cut_short_commit_deletes_what_the_target_says_did_not_land(
    node,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    asked: list[list[str]] = []

    async def settle(keys: list[str]) -> list[str]:
        asked.append(list(keys))
        return [k for k in keys if "/blocks/" not in k]  # as if blocks had landed

    target = target_for(LocalStore(tmp_path / "data"), settle=settle)
    keys = await cancelled_mid_commit(node[0], target)
    assert asked == [keys]
    left = [o.key for o in await target.store.list()]
    assert left == [k for k in keys if "/blocks/" in k]


async def test_a_commit_that_cannot_be_settled_is_handed_off(node, tmp_path: Path) -> None:  # noqa: ANN001
    handed: list[list[str]] = []

    async def settle(keys: list[str]) -> list[str]:
        raise OSError("database unavailable")

    target = target_for(LocalStore(tmp_path / "data"), settle=settle, hand_off=handed.append)
    keys = await cancelled_mid_commit(node[0], target)
    assert handed == [keys]
    assert sorted(o.key for o in await target.store.list()) == sorted(keys)  # kept, for now
