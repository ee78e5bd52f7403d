"""`ampd dump`'s worker processes: they share the provider's limits, pipeline their
fetches, give the same batches as in-process conversion, and fail or stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ampd.extract.fetch_processes import FetchProcesses
from ampd.extract.parallel import ProcessPoolSource, WorkerProcessError, share_limits
from ampd.providers.config import ProviderConfig, parse_provider
from ampd.providers.evm_rpc import EvmRpcClient
from ampd.providers.evm_rpc.convert import convert
from ampd.providers.evm_rpc.schema import TABLES
from support.anvil import Anvil
from support.chain import ChainInfo, build_varied_chain
from support.dumps import dump_command, read_table, write_inputs
from support.faultproxy import Fault, FaultProxy
from support.procs import children_of, gone_within

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Anvil, ChainInfo]]:
    with Anvil() as anvil:
        yield anvil, build_varied_chain(anvil)


def provider(url: str, **keys: Any) -> ProviderConfig:
    return parse_provider("local", {"kind": "evm-rpc", "network": "anvil", "url": url, **keys})


def chunks_of(numbers: list[int], size: int) -> list[list[int]]:
    return [numbers[i : i + size] for i in range(0, len(numbers), size)]


def test_limits_are_divided_among_the_workers() -> None:
    config = provider("http://127.0.0.1:1", concurrent_request_limit=10, rate_limit_per_minute=7)
    assert ProcessPoolSource("evm-rpc", [config], 3).processes == 3
    (shared,) = share_limits([config], 3)
    assert shared["concurrent_request_limit"] == 3  # 3 workers x 3 <= 10
    assert shared["rate_limit_per_minute"] == 2
    assert shared["url"] == "http://127.0.0.1:1"
    # Never more workers than requests allowed in flight: each needs one.
    tight = provider("http://127.0.0.1:1", concurrent_request_limit=2)
    assert ProcessPoolSource("evm-rpc", [tight], 8).processes == 2
    assert share_limits([tight], 2)[0]["concurrent_request_limit"] == 1


async def test_workers_stay_within_the_limit_and_match_in_process_conversion(
    node: tuple[Anvil, ChainInfo], proxy: FaultProxy
) -> None:
    _, chain = node
    # Every request held 0.3 s, so that whatever may overlap does.
    proxy.set_faults(Fault("delay", every=1, delay=0.3))
    config = provider(proxy.url, concurrent_request_limit=2, rpc_batch_size=4)
    chunks = chunks_of(chain.numbers, 3)
    async with ProcessPoolSource("evm-rpc", [config], 4) as pool:
        assert pool.processes == 2
        got = await asyncio.gather(*(pool.chunk(c) for c in chunks))
    assert 1 <= proxy.max_in_flight <= 2
    async with EvmRpcClient(provider(node[0].url)) as client:
        for numbers, chunk in zip(chunks, got, strict=True):
            want = convert(await client.fetch_blocks(numbers))
            assert [h.number for h in chunk.headers] == numbers
            for table, batch in want.items():
                assert chunk.batches[table].equals(batch), (table, numbers)


async def test_a_killed_worker_fails_its_chunks_with_a_clear_error(
    node: tuple[Anvil, ChainInfo],
) -> None:
    _, chain = node
    async with ProcessPoolSource("evm-rpc", [provider(node[0].url)], 2) as pool:
        pool.start()
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        results = await asyncio.wait_for(
            asyncio.gather(
                *(pool.chunk(c) for c in chunks_of(chain.numbers, 2)[:4]), return_exceptions=True
            ),
            timeout=60,
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors and all(isinstance(e, WorkerProcessError) for e in errors)
    assert f"fetch process {victim} exited (code -9)" in str(errors[0])
    assert len(errors) < len(results)  # the other worker's chunks came back


async def test_closing_with_chunks_in_hand_stops_every_worker_cleanly(
    node: tuple[Anvil, ChainInfo], proxy: FaultProxy
) -> None:
    _, chain = node
    proxy.set_faults(Fault("delay", every=1, delay=20))
    pool = ProcessPoolSource("evm-rpc", [provider(proxy.url)], 2)
    tasks = [asyncio.ensure_future(pool.chunk(c)) for c in chunks_of(chain.numbers, 2)[:4]]
    while proxy.requests < 2:  # both workers are waiting on the node
        await asyncio.sleep(0.05)
    await pool.aclose()
    # Each worker exited by itself on the shutdown message (a killed one reports -9).
    assert pool.exit_codes == [0, 0]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, WorkerProcessError) for r in results)


async def test_a_chunk_its_provider_keeps_failing_holds_up_no_other_and_stops_when_dropped(
    node: tuple[Anvil, ChainInfo], proxy: FaultProxy
) -> None:
    """One fetch process serving two provider sets, as a worker's segments of two datasets
    share it: a chunk whose provider answers 503 for ever (retried for ever) neither holds
    up a chunk of the other set asked for after it, nor goes on retrying once its caller
    gives it up (the child cancels its work too)."""
    anvil, chain = node
    proxy.set_faults(Fault("http_503", method="eth_getBlockReceipts"))
    shared = FetchProcesses(1)
    failing = ProcessPoolSource("evm-rpc", [provider(proxy.url)], shared=shared)
    healthy = ProcessPoolSource("evm-rpc", [provider(anvil.url)], shared=shared)
    try:
        stuck = asyncio.ensure_future(failing.chunk(chain.numbers[:2]))
        while proxy.injected["http_503"] < 3:  # being retried
            assert not stuck.done()
            await asyncio.sleep(0.05)
        chunk = await asyncio.wait_for(healthy.chunk(chain.numbers[:2]), timeout=30)
        assert [h.number for h in chunk.headers] == chain.numbers[:2]
        assert not stuck.done()
        stuck.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stuck
        await healthy.head()  # the child has read the cancel by the time it answers this
        seen = proxy.requests
        await asyncio.sleep(6.0)  # past the longest retry backoff (5 s)
        assert proxy.requests <= seen + 1  # at most the one in flight at the cancel
    finally:
        await shared.aclose()


# -- `ampd dump` as a process: signals -----------------------------------------------------


@pytest.fixture(scope="module")
def long_chain(node: tuple[Anvil, ChainInfo]) -> int:
    """The last block once 400 empty blocks are added: a dump long enough to interrupt."""
    anvil, _ = node
    anvil.mine(400)
    return anvil.block_number()


def _start_dump(tmp_path: Path, url: str, end: int) -> subprocess.Popen[str]:
    inputs = write_inputs(tmp_path, url, concurrent_request_limit=2, rpc_batch_size=50)
    command = dump_command(inputs, tmp_path / "data", 0, end, "--chunk-blocks", "10")
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def test_ctrl_c_stops_dump_gracefully_keeping_what_it_wrote(
    node: tuple[Anvil, ChainInfo], long_chain: int, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.set_faults(Fault("delay", every=1, delay=0.2))  # slow enough to be interrupted
    dump = _start_dump(tmp_path, proxy.url, long_chain)
    try:
        # Two head requests, then a request per chunk, at most one per worker in flight:
        # at 12 requests, 8 chunks have been answered (each answer held 0.2 s, while
        # converting and writing take milliseconds).
        while proxy.requests < 12:
            assert dump.poll() is None, dump.stderr.read() if dump.stderr else ""
            time.sleep(0.05)
        workers = children_of(dump.pid)
        assert len(workers) == 2
        os.killpg(dump.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        out, err = dump.communicate(timeout=60)
    finally:
        if dump.poll() is None:
            os.killpg(dump.pid, signal.SIGKILL)
    assert dump.returncode == 0, err
    summary = json.loads(out)
    assert summary["complete"] is False
    last = summary["last_block"]
    assert 0 <= last < long_chain and summary["blocks"] == last + 1
    assert f"blocks 0..{last} are written, {last + 1}..{long_chain} are not" in err
    blocks = read_table(sorted((tmp_path / "data").rglob("blocks/*/*.parquet")), TABLES["blocks"])
    assert blocks.column("block_num").to_pylist() == list(range(last + 1))
    assert gone_within(workers, within=10)


def test_workers_exit_when_dump_is_killed(
    long_chain: int, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.set_faults(Fault("delay", every=1, delay=0.2))
    dump = _start_dump(tmp_path, proxy.url, long_chain)
    workers: list[int] = []
    try:
        while proxy.requests < 4:
            time.sleep(0.05)
        workers = children_of(dump.pid)
        assert len(workers) == 2
        dump.kill()
        dump.wait(timeout=30)
        # The pipe to the dead parent reads EOF: each worker stops by itself.
        assert gone_within(workers, within=15)
    finally:
        if dump.poll() is None:
            dump.kill()
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
