"""Every transient fault the spec names, provoked for real between the client and anvil.

Each test fetches the varied chain through the fault proxy and checks two things: the
result equals a clean fetch, and the proxy really injected the fault.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from ampd.providers.config import ProviderConfig, parse_provider
from ampd.providers.evm_rpc import (
    EvmRpcClient,
    ProviderPool,
    ProviderRejectedError,
    RawBlock,
    RetriesExhaustedError,
)
from support.anvil import Anvil
from support.chain import ChainInfo, build_varied_chain
from support.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Anvil, ChainInfo]]:
    with Anvil() as anvil:
        yield anvil, build_varied_chain(anvil)


@pytest.fixture(scope="module")
def chain(node: tuple[Anvil, ChainInfo]) -> ChainInfo:
    return node[1]


@pytest.fixture(scope="module")
def clean(node: tuple[Anvil, ChainInfo]) -> list[RawBlock]:
    """The chain fetched straight from anvil, without the proxy or the code under test."""
    anvil, chain = node
    blocks = []
    for n in chain.numbers:
        block = anvil.block(n)
        blocks.append(RawBlock(n, block, anvil.block_receipts(n) if block["transactions"] else []))
    return blocks


def provider(url: str, **keys: Any) -> ProviderConfig:
    return parse_provider("flaky", {"kind": "evm-rpc", "network": "anvil", "url": url, **keys})


def client(proxy: FaultProxy, **keys: Any) -> EvmRpcClient:
    # Bounded attempts so a fault the client failed to survive fails the test quickly.
    return EvmRpcClient(provider(proxy.url, **keys), max_attempts=8, backoff_base=0.01)


FAULTS = [
    Fault("reset", first=2),
    Fault("http_429", first=2),
    Fault("http_500", first=2),
    Fault("http_502", first=2),
    Fault("http_503", first=2),
    Fault("rpc_error", first=2),
    Fault("malformed", first=2),
    Fault("truncated", first=2),
    Fault("truncated", method="eth_getBlockReceipts", first=1),
    Fault("null_block", method="eth_getBlockByNumber", first=2),
    Fault("receipts_mismatch", method="eth_getBlockReceipts", first=2),
    Fault("http_503", every=2),
]


@pytest.mark.parametrize("batch_size", [0, 50])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f"{f.kind}-{f.method or 'any'}")
async def test_fault_survived(
    proxy: FaultProxy, chain: ChainInfo, clean: list[RawBlock], fault: Fault, batch_size: int
) -> None:
    proxy.set_faults(Fault(fault.kind, fault.method, fault.first, fault.every))
    async with client(proxy, rpc_batch_size=batch_size) as c:
        got = await c.fetch_blocks(chain.numbers)
    assert got == clean
    assert proxy.injected[fault.kind] >= 1


async def test_delay_past_timeout(
    proxy: FaultProxy, chain: ChainInfo, clean: list[RawBlock]
) -> None:
    proxy.set_faults(Fault("delay", method="eth_getBlockByNumber", first=1, delay=2.5))
    async with client(proxy, timeout_secs=1, rpc_batch_size=50) as c:
        assert await c.fetch_blocks(chain.numbers) == clean
    assert proxy.injected["delay"] == 1


async def test_batch_missing_id_resends_only_the_missing_call(
    proxy: FaultProxy, chain: ChainInfo, clean: list[RawBlock]
) -> None:
    proxy.set_faults(Fault("batch_missing_id", first=1))
    calls = [("eth_getBlockByNumber", [hex(n), True]) for n in chain.numbers]
    async with client(proxy, rpc_batch_size=50) as c:
        results = await c.batch(calls)
    assert results == [b.block for b in clean]
    assert proxy.injected["batch_missing_id"] == 1
    assert proxy.calls["eth_getBlockByNumber"] == len(calls) + 1  # one call sent again
    assert proxy.requests == 2


async def test_batch_missing_id_during_fetch(
    proxy: FaultProxy, chain: ChainInfo, clean: list[RawBlock]
) -> None:
    proxy.set_faults(Fault("batch_missing_id", method="eth_getBlockReceipts", first=1))
    async with client(proxy, rpc_batch_size=50) as c:
        assert await c.fetch_blocks(chain.numbers) == clean
    assert proxy.injected["batch_missing_id"] == 1


async def test_rpc_error_in_batch_resends_only_that_call(proxy: FaultProxy) -> None:
    proxy.set_faults(Fault("rpc_error", first=1))
    async with client(proxy, rpc_batch_size=50) as c:
        assert await c.batch([("eth_chainId", [])] * 10) == ["0x7a69"] * 10
    assert proxy.calls["eth_chainId"] == 11


async def test_missing_receipt_per_tx(
    proxy: FaultProxy, chain: ChainInfo, clean: list[RawBlock]
) -> None:
    proxy.set_faults(Fault("receipts_mismatch", method="eth_getTransactionReceipt", first=3))
    async with client(proxy, fetch_receipts_per_tx=True) as c:
        assert await c.fetch_blocks(chain.numbers) == clean
    assert proxy.injected["receipts_mismatch"] == 3


async def test_retries_are_logged_with_provider_method_and_reason(
    proxy: FaultProxy, chain: ChainInfo, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.set_faults(Fault("http_503", method="eth_getBlockReceipts", first=1))
    with caplog.at_level(logging.WARNING, logger="ampd.providers.evm_rpc"):
        async with client(proxy, rpc_batch_size=50) as c:
            await c.fetch_blocks(chain.numbers)
    (line,) = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert "'flaky'" in line and "eth_getBlockReceipts" in line and "HTTP 503" in line


async def test_persistent_fault_gives_up_when_bounded(proxy: FaultProxy) -> None:
    proxy.set_faults(Fault("http_500"))
    async with client(proxy) as c:
        with pytest.raises(RetriesExhaustedError) as e:
            await c.head()
    assert e.value.attempts == 8 and proxy.requests == 8
    assert "provider 'flaky'" in str(e.value) and "HTTP 500" in str(e.value)


@pytest.mark.parametrize("status", [401, 403, 404, 400])
async def test_client_errors_are_not_retried(proxy: FaultProxy, status: int) -> None:
    proxy.set_faults(Fault(f"http_{status}"))
    async with EvmRpcClient(provider(proxy.url, rpc_batch_size=5)) as c:  # unbounded retries
        with pytest.raises(ProviderRejectedError) as e:
            await c.batch([("eth_chainId", [])] * 20)
    assert e.value.status == status
    assert f"HTTP {status}" in str(e.value)
    assert "provider 'flaky'" in str(e.value) and proxy.url in str(e.value)
    assert proxy.requests <= 4  # the requests already in flight, none retried


async def test_wrong_token_is_rejected_without_leaking_it(node: tuple[Anvil, ChainInfo]) -> None:
    with FaultProxy(node[0].url, require_header=("Authorization", "Bearer right")) as proxy:
        async with EvmRpcClient(provider(proxy.url, auth_token="wrong-token")) as c:
            with pytest.raises(ProviderRejectedError) as e:
                await c.head()
        assert e.value.status == 401 and proxy.rejected == 1
        assert "wrong-token" not in str(e.value) and "auth_token" in str(e.value)
        async with EvmRpcClient(provider(proxy.url, auth_token="right")) as c:
            assert await c.head() >= 0


async def test_url_from_environment_stays_a_placeholder_in_errors(
    proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAKY_RPC_URL", proxy.url)
    proxy.set_faults(Fault("http_403"))
    async with EvmRpcClient(provider("${FLAKY_RPC_URL}")) as c:
        with pytest.raises(ProviderRejectedError) as e:
            await c.head()
    assert "${FLAKY_RPC_URL}" in str(e.value) and proxy.url not in str(e.value)


async def test_pool_serves_through_a_provider_that_refuses(
    node: tuple[Anvil, ChainInfo], proxy: FaultProxy, chain: ChainInfo, clean: list[RawBlock]
) -> None:
    proxy.set_faults(Fault("http_401"))
    refusing = parse_provider("refusing", {"kind": "evm-rpc", "network": "anvil", "url": proxy.url})
    good = parse_provider("good", {"kind": "evm-rpc", "network": "anvil", "url": node[0].url})
    async with ProviderPool([refusing, good]) as pool:
        assert await pool.fetch_blocks(chain.numbers) == clean
        assert "refusing" in pool.cooling_down()
    async with ProviderPool([refusing]) as pool:
        with pytest.raises(ProviderRejectedError):
            await pool.head()
