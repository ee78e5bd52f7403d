"""The evm-rpc client against a real anvil: transports, batching, limits, blocks, pools.

Ground truth comes from `Anvil.rpc`, a separate tiny client, never from the code under test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ampd.providers.config import ProviderConfig, parse_provider
from ampd.providers.evm_rpc import (
    BlockNotFoundError,
    EvmRpcClient,
    ProviderPool,
    RawBlock,
    RetriesExhaustedError,
)
from support.anvil import Anvil, free_port
from support.chain import ChainInfo, build_varied_chain
from support.faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Anvil, ChainInfo]]:
    ipc = tmp_path_factory.mktemp("anvil") / "anvil.ipc"
    with Anvil(ipc_path=ipc) as anvil:
        yield anvil, build_varied_chain(anvil)


@pytest.fixture(scope="module")
def anvil(node: tuple[Anvil, ChainInfo]) -> Anvil:
    return node[0]


@pytest.fixture(scope="module")
def chain(node: tuple[Anvil, ChainInfo]) -> ChainInfo:
    return node[1]


@pytest.fixture(scope="module")
def truth(anvil: Anvil, chain: ChainInfo) -> dict[int, RawBlock]:
    """Every block of the chain, with receipts, fetched independently."""
    blocks = {}
    for n in range(0, chain.end + 1):
        block = anvil.block(n)
        receipts = anvil.block_receipts(n) if block["transactions"] else []
        blocks[n] = RawBlock(n, block, receipts)
    return blocks


@pytest.fixture
def proxy(anvil: Anvil) -> Iterator[FaultProxy]:
    with FaultProxy(anvil.url) as p:
        yield p


def provider(url: str, name: str = "anvil", **keys: Any) -> ProviderConfig:
    return parse_provider(name, {"kind": "evm-rpc", "network": "anvil", "url": url, **keys})


async def test_call_and_head(anvil: Anvil, chain: ChainInfo) -> None:
    async with EvmRpcClient(provider(anvil.url)) as client:
        assert await client.call("eth_chainId") == anvil.rpc("eth_chainId")
        assert await client.call("eth_getBalance", [chain.contract, "latest"]) == "0x0"
        assert await client.head() == anvil.block_number()
        # anvil's finalized tag is the head minus 64: block 0 on this short chain.
        assert await client.head(finalized=True) == 0
        assert client.known_head == anvil.block_number()


@pytest.mark.parametrize(("batch_size", "requests"), [(1, 60), (0, 60), (50, 2)])
async def test_batch_in_order_and_grouped(
    proxy: FaultProxy, truth: dict[int, RawBlock], chain: ChainInfo, batch_size: int, requests: int
) -> None:
    calls = [("eth_getBlockByNumber", [hex(i % (chain.end + 1)), False]) for i in range(55)]
    calls += [("eth_chainId", [])] * 5
    async with EvmRpcClient(provider(proxy.url, rpc_batch_size=batch_size)) as client:
        results = await client.batch(calls)
    for i, result in enumerate(results[:55]):
        assert result["hash"] == truth[i % (chain.end + 1)].block["hash"]
    assert results[55:] == ["0x7a69"] * 5
    assert proxy.requests == requests
    assert sum(proxy.calls.values()) == 60


async def test_concurrency_limit_respected(anvil: Anvil) -> None:
    calls = [("eth_blockNumber", [])] * 40
    with FaultProxy(anvil.url, latency=0.05) as proxy:
        async with EvmRpcClient(provider(proxy.url, concurrent_request_limit=4)) as client:
            await client.batch(calls)
        assert 2 <= proxy.max_in_flight <= 4
        proxy.reset_stats()
        async with EvmRpcClient(provider(proxy.url, concurrent_request_limit=1)) as client:
            await client.batch(calls[:10])
        assert proxy.max_in_flight == 1


def assert_same_blocks(got: list[RawBlock], truth: dict[int, RawBlock], numbers: list[int]) -> None:
    assert [b.number for b in got] == numbers
    for b in got:
        assert b.block == truth[b.number].block, f"block {b.number} differs"
        assert b.receipts == truth[b.number].receipts, f"receipts of block {b.number} differ"


@pytest.mark.parametrize("transport", ["http", "ws", "ipc"])
@pytest.mark.parametrize("batch_size", [0, 50])
async def test_fetch_blocks_equals_node(
    anvil: Anvil, chain: ChainInfo, truth: dict[int, RawBlock], transport: str, batch_size: int
) -> None:
    url = {"http": anvil.url, "ws": anvil.ws_url, "ipc": anvil.ipc_url}[transport]
    async with EvmRpcClient(provider(url, rpc_batch_size=batch_size)) as client:
        got = await client.fetch_blocks(chain.numbers)
        assert_same_blocks(got, truth, chain.numbers)
        # Any order, repeats and genesis (no transactions, no receipts call) too.
        numbers = [chain.end, 0, chain.multi_tx_block, 0]
        assert_same_blocks(await client.fetch_blocks(numbers), truth, numbers)
        assert await client.fetch_blocks([]) == []


async def test_varied_chain_has_every_kind(chain: ChainInfo, truth: dict[int, RawBlock]) -> None:
    types = {int(tx["type"], 16) for b in truth.values() for tx in b.block["transactions"]}
    assert types == {0, 1, 2, 3, 4}
    statuses = [r["status"] for r in truth[chain.multi_tx_block].receipts]
    assert "0x0" in statuses and statuses.count("0x1") == 4
    topic_counts = sorted(
        len(log["topics"]) for r in truth[chain.multi_tx_block].receipts for log in r["logs"]
    )
    assert topic_counts == [0, 1, 2, 3, 4]
    assert all(not truth[n].block["transactions"] for n in chain.empty_blocks)
    deploy = chain.by_kind("deploy")[0]
    (deploy_tx,) = truth[deploy.block].block["transactions"]
    assert deploy_tx["to"] is None
    access_lists = [
        tx["accessList"]
        for tx in truth[chain.multi_tx_block].block["transactions"]
        if tx["type"] == "0x1"
    ]
    assert access_lists and all(access_lists)


async def test_receipts_per_tx_gives_same_receipts(
    proxy: FaultProxy, chain: ChainInfo, truth: dict[int, RawBlock]
) -> None:
    config = provider(proxy.url, fetch_receipts_per_tx=True, rpc_batch_size=10)
    async with EvmRpcClient(config) as client:
        got = await client.fetch_blocks(chain.numbers)
    assert_same_blocks(got, truth, chain.numbers)
    assert proxy.calls["eth_getTransactionReceipt"] == len(chain.txs)
    assert proxy.calls["eth_getBlockReceipts"] == 0


async def test_blocks_and_receipts_come_in_one_round_trip(
    proxy: FaultProxy, chain: ChainInfo, truth: dict[int, RawBlock]
) -> None:
    numbers = chain.numbers
    async with EvmRpcClient(provider(proxy.url, rpc_batch_size=2 * len(numbers))) as client:
        got = await client.fetch_blocks(numbers)
    assert_same_blocks(got, truth, numbers)
    assert all(got[numbers.index(n)].receipts == [] for n in chain.empty_blocks)
    # One request for the head, then one batch holding every block beside its receipts.
    assert proxy.requests == 2
    assert proxy.calls["eth_getBlockByNumber"] == len(numbers) + 1
    assert proxy.calls["eth_getBlockReceipts"] == len(numbers)


async def test_block_above_head_is_not_found(anvil: Anvil) -> None:
    head = anvil.block_number()
    async with EvmRpcClient(provider(anvil.url)) as client:
        with pytest.raises(BlockNotFoundError) as e:
            await client.fetch_blocks([head, head + 5])
    assert e.value.number == head + 5 and e.value.head == head
    assert "provider 'anvil'" in str(e.value)


@pytest.mark.parametrize(
    ("keys", "header", "value"),
    [
        ({"auth_token": "s3cret"}, "authorization", "Bearer s3cret"),
        ({"auth_token": "s3cret", "auth_header": "X-Api-Key"}, "x-api-key", "s3cret"),
    ],
)
async def test_auth_header_sent_over_http(
    proxy: FaultProxy, keys: dict[str, str], header: str, value: str
) -> None:
    async with EvmRpcClient(provider(proxy.url, **keys)) as client:
        await client.call("eth_chainId")
        await client.batch([("eth_chainId", [])] * 3)
    assert proxy.headers and all(h.get(header) == value for h in proxy.headers)
    if header != "authorization":
        assert all("authorization" not in h for h in proxy.headers)


async def test_auth_header_sent_in_websocket_handshake() -> None:
    """A real WebSocket server (not anvil, which ignores headers) records the handshake."""
    seen: list[dict[str, str]] = []

    def record(connection: ServerConnection, request: Any) -> None:
        seen.append({k.lower(): v for k, v in request.headers.raw_items()})

    async def answer(ws: ServerConnection) -> None:
        async for message in ws:
            request = json.loads(message)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}))

    async with serve(answer, "127.0.0.1", 0, process_request=record) as server:
        port = server.sockets[0].getsockname()[1]
        config = provider(f"ws://127.0.0.1:{port}", auth_token="tok", auth_header="Drpc-Key")
        async with EvmRpcClient(config) as client:
            assert await client.call("eth_chainId") == "0x1"
    assert seen and seen[0].get("drpc-key") == "tok"


async def test_rate_limit_paces_requests_and_batch_counts_once(anvil: Anvil) -> None:
    # 600 a minute: bursts of 10, then one every 0.1 s. 20 single calls cannot take less
    # than ~1 s however fast the machine is; one batch of 20 calls is one request.
    with FaultProxy(anvil.url) as proxy:
        config = provider(proxy.url, rate_limit_per_minute=600)
        async with EvmRpcClient(config) as client:
            started = time.monotonic()
            await client.batch([("eth_chainId", [])] * 20)
            assert time.monotonic() - started >= 0.9
        assert proxy.requests == 20
        proxy.reset_stats()
        config = provider(proxy.url, rate_limit_per_minute=600, rpc_batch_size=50)
        async with EvmRpcClient(config) as client:
            await client.batch([("eth_chainId", [])] * 20)
        assert proxy.requests == 1


@pytest.mark.parametrize("transport", ["ws", "ipc"])
async def test_reconnects_after_node_restart(tmp_path, transport: str) -> None:
    port, ipc = free_port(), tmp_path / "restart.ipc"
    first = Anvil(port=port, ipc_path=ipc)
    url = first.ws_url if transport == "ws" else first.ipc_url
    client = EvmRpcClient(provider(url, timeout_secs=2), backoff_base=0.05)
    try:
        with first:
            first.mine(3)
            assert await client.head() == 3
        # Same address, new chain: the next request reconnects (retrying until it is back).
        with Anvil(port=port, ipc_path=ipc) as second:
            assert await client.call("eth_blockNumber") == hex(second.block_number())
    finally:
        await client.aclose()


async def test_ipc_and_ws_serve_concurrent_requests(
    anvil: Anvil, truth: dict[int, RawBlock]
) -> None:
    for url in (anvil.ws_url, anvil.ipc_url):
        async with EvmRpcClient(provider(url)) as client:
            results = await asyncio.gather(
                *(client.call("eth_getBlockByNumber", [hex(n % 5), False]) for n in range(50))
            )
        assert [r["hash"] for r in results] == [truth[n % 5].block["hash"] for n in range(50)]


# --- pools ---


async def test_pool_fails_over_from_a_dead_provider(
    anvil: Anvil, chain: ChainInfo, truth: dict[int, RawBlock]
) -> None:
    dead = provider(f"http://127.0.0.1:{free_port()}", name="dead", timeout_secs=1)
    good = provider(anvil.url, name="good")
    async with ProviderPool([dead, good], failover_after=2, backoff_base=0.01) as pool:
        for _ in range(3):
            got = await pool.fetch_blocks(chain.numbers)
            assert_same_blocks(got, truth, chain.numbers)
        assert pool.cooling_down() == ["dead"]
        assert await pool.head() == anvil.block_number()


async def test_pool_spreads_load(anvil: Anvil) -> None:
    with FaultProxy(anvil.url) as a, FaultProxy(anvil.url) as b:
        configs = [provider(a.url, name="a"), provider(b.url, name="b")]
        async with ProviderPool(configs) as pool:
            for _ in range(6):
                await pool.call("eth_chainId")
        assert a.requests == 3 and b.requests == 3


async def test_pool_gives_up_when_all_are_dead() -> None:
    configs = [provider(f"http://127.0.0.1:{free_port()}", name=f"dead{i}") for i in range(2)]
    async with ProviderPool(configs, max_attempts=3, failover_after=2, backoff_base=0.01) as pool:
        with pytest.raises(RetriesExhaustedError, match="dead"):
            await pool.head()


async def test_single_provider_pool_is_the_client(anvil: Anvil, chain: ChainInfo) -> None:
    async with ProviderPool([provider(anvil.url)]) as pool:
        assert len(pool.clients) == 1
        assert await pool.head() == anvil.block_number()
        assert (await pool.batch([("eth_chainId", [])])) == ["0x7a69"]
        assert len(await pool.fetch_blocks(chain.numbers)) == len(chain.numbers)


async def test_concurrent_fetches_share_one_head_request(
    proxy: FaultProxy, chain: ChainInfo, truth: dict[int, RawBlock]
) -> None:
    numbers = chain.numbers[:5]
    async with EvmRpcClient(provider(proxy.url)) as client:
        got = await asyncio.gather(*(client.fetch_blocks([n]) for n in numbers))
    assert [b for (b,) in got] == [truth[n] for n in numbers]
    # One eth_getBlockByNumber per block, and a single one for the head they all needed.
    assert proxy.calls["eth_getBlockByNumber"] == len(numbers) + 1
