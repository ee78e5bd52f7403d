"""The test Firehose server and its blocks, against a real anvil and a real gRPC client.

One anvil per module holds the chain of `support.firehose_chain` (nested calls with logs at
three depths, a reverted transaction, a reverted and a failed inner call, DELEGATECALL,
STATICCALL to a precompile, CREATE and CREATE2 with logging constructors, a contract
creation, value transfers, an empty block), the varied chain of `support.chain` (every
transaction type the tools allow), and a fork: three blocks mined, built, then replaced by
three others after `evm_revert`. The Blocks built from it are checked against the node's own
answers (support.firehose_checks), then streamed through `FirehoseServer` with a grpcio
channel: ranges, stop blocks, final blocks, cursors, follow mode, reorgs, auth, faults, gzip,
Fetch, and the server as a process of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from ampd.providers.firehose.proto import ethereum_pb2 as pb
from ampd.providers.firehose.proto import firehose_pb2 as fh
from support.anvil import DEV_ACCOUNTS, Anvil, find_cast, free_port
from support.chain import build_varied_chain, wait_for_receipt
from support.firehose_blocks import build_blocks, load_blocks, read_serialized, save_blocks
from support.firehose_chain import CREATED_TOPIC, CallChain, build_call_chain
from support.firehose_checks import (
    NodeBlock,
    check_calls,
    check_header,
    check_ordinals,
    check_transactions,
    node_view,
    raw,
)
from support.firehose_process import FirehoseServerProcess
from support.firehose_relay import CountingRelay
from support.firehose_server import FirehoseServer
from support.firehose_store import Cursor

pytestmark = pytest.mark.timeout(180)

NEW, UNDO, FINAL = fh.STEP_NEW, fh.STEP_UNDO, fh.STEP_FINAL


@dataclass
class Chain:
    anvil: Anvil
    calls: CallChain
    blocks: list[pb.Block]  # 0..head of the node, the second fork branch included
    fork_a: list[pb.Block]  # the abandoned branch: same numbers as blocks[-3:]
    node: dict[int, NodeBlock]

    @property
    def head(self) -> int:
        return self.blocks[-1].number


def _mine_branch(anvil: Anvil, salt: int) -> None:
    """Three blocks of one transfer each (the values make the branches differ)."""
    anvil.set_automine(False)
    try:
        for i in range(3):
            tx = anvil.send(
                {"from": DEV_ACCOUNTS[4], "to": DEV_ACCOUNTS[0], "value": hex(salt + i)}
            )
            anvil.rpc("evm_mine")
            assert wait_for_receipt(anvil, tx) is not None
    finally:
        anvil.set_automine(True)


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        calls = build_call_chain(anvil)
        build_varied_chain(anvil, hardfork=None if find_cast() else "london")
        base = anvil.block_number()
        snapshot = anvil.rpc("evm_snapshot")
        _mine_branch(anvil, 1000)
        fork_a = build_blocks(anvil.url, base + 1, base + 3)
        anvil.rpc("evm_revert", snapshot)
        _mine_branch(anvil, 2000)
        assert anvil.block_number() == base + 3
        blocks = build_blocks(anvil.url, 0, anvil.block_number(), batch_blocks=7)
        yield Chain(anvil, calls, blocks, fork_a, node_view(anvil, range(len(blocks))))


# --- the blocks agree with the node ---


def test_blocks_agree_with_the_node(chain: Chain) -> None:
    assert [b.number for b in chain.blocks] == list(range(chain.head + 1))
    assert {b.hash for b in chain.fork_a}.isdisjoint(b.hash for b in chain.blocks)
    for block in chain.blocks:
        node = chain.node[block.number]
        check_header(block, node.block)
        check_transactions(block, node)
        for trace, frame, tx in zip(
            block.transaction_traces, node.traces, node.block["transactions"], strict=True
        ):
            check_calls(trace, frame, tx)
        check_ordinals(block)
    kinds = {t.type for b in chain.blocks for t in b.transaction_traces}
    assert {0, 1, 2} <= kinds and (kinds >= {3, 4} or not find_cast())


def _trace(chain: Chain, name: str) -> pb.TransactionTrace:
    block = chain.blocks[chain.calls.blocks[name]]
    return next(t for t in block.transaction_traces if t.hash == raw(chain.calls.txs[name]))


def _shape(trace: pb.TransactionTrace) -> list[tuple]:
    return [
        (c.depth, c.parent_index, c.call_type, c.status_failed, c.status_reverted, c.state_reverted)
        for c in trace.calls
    ]


def test_call_trees_of_each_case(chain: Chain) -> None:
    nested = _trace(chain, "nested")
    assert _shape(nested) == [(0, 0, 1, False, False, False), (1, 1, 1, False, False, False),
                              (2, 2, 1, False, False, False)]  # fmt: skip
    assert [len(c.logs) for c in nested.calls] == [2, 2, 1]
    positions = [x.blockIndex for x in nested.receipt.logs]
    assert positions == list(range(positions[0], positions[0] + 5))

    inner = _trace(chain, "inner_revert")  # the leaf succeeded, inside a reverted call
    assert inner.status == pb.SUCCEEDED
    assert _shape(inner) == [(0, 0, 1, False, False, False), (1, 1, 1, True, True, True),
                             (2, 2, 1, False, False, True)]  # fmt: skip
    assert inner.calls[1].failure_reason == "execution reverted"

    reverted = _trace(chain, "reverted")
    assert reverted.status == pb.REVERTED and not reverted.receipt.logs
    assert all(c.state_reverted for c in reverted.calls) and len(reverted.calls) == 3

    invalid = _trace(chain, "inner_invalid")  # failed without a revert: all its gas is gone
    failed = invalid.calls[1]
    assert (failed.status_failed, failed.status_reverted, failed.state_reverted) == (
        True,
        False,
        True,
    )
    assert failed.failure_reason and failed.gas_consumed == failed.gas_limit

    delegate = _trace(chain, "delegate")
    assert [c.call_type for c in delegate.calls] == [pb.CALL, pb.DELEGATE, pb.STATIC]
    assert delegate.calls[2].address == bytes(19) + b"\x04" and delegate.calls[2].executed_code
    assert delegate.calls[1].address == raw(chain.calls.relays[1])

    create = _trace(chain, "create")
    created = [c for c in create.calls if c.call_type == pb.CREATE]
    assert [c.depth for c in created] == [1, 1] and all(c.executed_code for c in created)
    assert all(c.input and not c.return_data and len(c.logs) == 1 for c in created)
    (factory_log,) = create.calls[0].logs
    addresses = [c.address.rjust(32, b"\0") for c in reversed(created)]
    assert list(factory_log.topics) == [CREATED_TOPIC, *addresses] and factory_log.data == b""
    assert factory_log.ordinal > created[1].end_ordinal  # logged after both creations

    deploy = _trace(chain, "deploy")
    assert deploy.calls[0].call_type == pb.CREATE and deploy.to == raw(chain.calls.relays[0])

    transfer = _trace(chain, "transfer")
    assert len(transfer.calls) == 1 and not transfer.calls[0].executed_code
    value_call = _trace(chain, "value_call")
    assert [c.value.bytes for c in value_call.calls] == [(12345).to_bytes(2, "big")] * 2

    empty = chain.blocks[chain.calls.blocks["empty"]]
    assert not empty.transaction_traces and empty.header.gas_used == 0


def test_block_file_round_trip(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "chain.blocks"
    assert save_blocks(path, chain.blocks) == len(chain.blocks)
    assert load_blocks(path) == chain.blocks
    assert list(read_serialized(path)) == [b.SerializeToString() for b in chain.blocks]


# --- streaming ---


def _channel(url: str, compression: grpc.Compression | None = None) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", 100 << 20), ("grpc.enable_retries", 0)]
    return grpc.insecure_channel(url.removeprefix("http://"), options, compression=compression)


def _open(channel: grpc.Channel, token: str | None = None, **request) -> Iterator[fh.Response]:
    call = channel.unary_stream(
        "/sf.firehose.v2.Stream/Blocks",
        request_serializer=fh.Request.SerializeToString,
        response_deserializer=fh.Response.FromString,
    )
    metadata = [("authorization", f"bearer {token}")] if token else None
    return call(fh.Request(**request), metadata=metadata, timeout=60)


def _stream(url: str, **kwargs) -> list[tuple[int, int]]:
    with _channel(url, kwargs.pop("compression", None)) as channel:
        return [_step(r) for r in _open(channel, **kwargs)]


def _step(response: fh.Response) -> tuple[int, int]:
    assert response.block.type_url == "type.googleapis.com/sf.ethereum.type.v2.Block"
    return response.step, pb.Block.FromString(response.block.value).number


def _error(url: str, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _stream(url, **kwargs)
    return caught.value


def test_ranges_and_stop_blocks(chain: Chain) -> None:
    head = chain.head
    with FirehoseServer(chain.blocks, follow=False) as server:
        assert _stream(server.url, start_block_num=3, stop_block_num=6) == [
            (NEW, n) for n in range(3, 7)
        ]
        assert _stream(server.url, start_block_num=head - 1) == [(NEW, head - 1), (NEW, head)]
        assert _stream(server.url, start_block_num=-3) == [
            (NEW, n) for n in range(head - 3, head + 1)
        ]
        error = _error(server.url, start_block_num=7, stop_block_num=5)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        with _channel(server.url) as channel:
            responses = list(_open(channel, start_block_num=0, stop_block_num=head))
        assert [pb.Block.FromString(r.block.value) for r in responses] == chain.blocks
        assert server.blocks_calls == 5 and server.messages_sent == 4 + 2 + 4 + head + 1


def test_final_blocks_only_and_following_the_head(chain: Chain) -> None:
    k = chain.head - 4
    with FirehoseServer(chain.blocks[: k + 1], final_depth=2) as server:
        assert server.lib == k - 2
        with _channel(server.url) as channel:
            final = _open(channel, start_block_num=k - 3, stop_block_num=k, final_blocks_only=True)
            assert [_step(next(final)) for _ in range(2)] == [(FINAL, k - 3), (FINAL, k - 2)]
            new = _open(channel, start_block_num=k, stop_block_num=k + 2)
            assert _step(next(new)) == (NEW, k)
            server.append(chain.blocks[k + 1 : k + 3])  # the streams were waiting for these
            assert [_step(r) for r in final] == [(FINAL, k - 1), (FINAL, k)]
            assert [_step(r) for r in new] == [(NEW, k + 1), (NEW, k + 2)]


def test_stopping_the_server_ends_open_streams(chain: Chain) -> None:
    server = FirehoseServer(chain.blocks).start()
    try:
        with _channel(server.url) as channel:
            stream = _open(channel, start_block_num=chain.head)  # follows the head
            assert _step(next(stream)) == (NEW, chain.head)
            assert server.active_streams == 1
            server.stop()
            with pytest.raises(grpc.RpcError):
                next(stream)
    finally:
        server.stop()
    assert server.active_streams == 0


def test_cursors_resume_right_after_their_block(chain: Chain) -> None:
    with FirehoseServer(chain.blocks, follow=False, final_depth=3) as server:
        with _channel(server.url) as channel:
            responses = list(_open(channel, start_block_num=2, stop_block_num=8))
        cursor = responses[2].cursor  # block 4
        decoded = Cursor.decode(cursor)
        assert (decoded.step, decoded.number, decoded.hash) == (NEW, 4, chain.blocks[4].hash)
        assert _stream(server.url, cursor=cursor, start_block_num=0, stop_block_num=6) == [
            (NEW, 5), (NEW, 6)
        ]  # fmt: skip
        assert _stream(server.url, cursor=cursor, final_blocks_only=True, stop_block_num=5) == [
            (FINAL, 5)
        ]
        tip = _stream(server.url, start_block_num=-1)
        with _channel(server.url) as channel:
            last = list(_open(channel, start_block_num=chain.head))[0].cursor
        assert tip == [(NEW, chain.head - 1), (NEW, chain.head)]
        error = _error(server.url, cursor=last, final_blocks_only=True)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "non-final" in error.details()
        error = _error(server.url, cursor="not-a-cursor")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_reorg_undoes_the_abandoned_blocks(chain: Chain) -> None:
    fork = chain.head - 2  # first block of both branches
    abandoned = chain.blocks[:fork] + chain.fork_a
    with FirehoseServer(abandoned, final_depth=5) as server:
        with _channel(server.url) as channel:
            stream = _open(channel, start_block_num=fork - 1)  # no stop: it follows the head
            first = [next(stream) for _ in range(4)]
            assert [_step(r) for r in first] == [(NEW, n) for n in range(fork - 1, fork + 3)]
            assert server.reorg(chain.blocks[fork:]) == [fork + 2, fork + 1, fork]
            rest = [next(stream) for _ in range(6)]
            stream.cancel()
        assert [_step(r) for r in rest] == [(UNDO, fork + 2), (UNDO, fork + 1), (UNDO, fork)] + [
            (NEW, n) for n in range(fork, fork + 3)
        ]
        undone = [pb.Block.FromString(r.block.value).hash for r in rest[:3]]
        assert undone == [b.hash for b in reversed(chain.fork_a)]
        assert [pb.Block.FromString(r.block.value) for r in rest[3:]] == chain.blocks[fork:]
        # A cursor on an abandoned block resumes by undoing down to the common ancestor.
        on_fork = first[2].cursor  # block `fork` + 1 of the first branch
        assert _stream(server.url, cursor=on_fork, stop_block_num=fork + 1) == [
            (UNDO, fork + 1), (UNDO, fork), (NEW, fork), (NEW, fork + 1)
        ]  # fmt: skip
        assert _stream(server.url, cursor=rest[1].cursor, stop_block_num=fork) == [
            (UNDO, fork), (NEW, fork)
        ]  # fmt: skip
        with pytest.raises(ValueError, match="final"):
            server.reorg([chain.blocks[2]])


def test_bearer_token(chain: Chain) -> None:
    with FirehoseServer(chain.blocks, token="s3cret", follow=False) as server:
        for token in (None, "wrong"):
            error = _error(server.url, token=token, start_block_num=1, stop_block_num=1)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: bearer" in error.details()
        assert _stream(server.url, token="s3cret", start_block_num=1, stop_block_num=1) == [
            (NEW, 1)
        ]
        assert server.last_metadata["authorization"] == "bearer s3cret"
        assert server.blocks_calls == 3 and server.messages_sent == 1


def test_injected_failures_and_cut_streams(chain: Chain) -> None:
    with FirehoseServer(chain.blocks, follow=False) as server:
        server.fail_next(2, grpc.StatusCode.UNAVAILABLE)
        for _ in range(2):
            error = _error(server.url, start_block_num=1, stop_block_num=3)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert _stream(server.url, start_block_num=1, stop_block_num=3) == [
            (NEW, 1),
            (NEW, 2),
            (NEW, 3),
        ]
        assert server.blocks_calls == 3 and server.messages_sent == 3

        server.cut_streams(2)
        with _channel(server.url) as channel:
            got = []
            with pytest.raises(grpc.RpcError) as caught:
                for response in _open(channel, start_block_num=1, stop_block_num=6):
                    got.append(_step(response))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and got == [(NEW, 1), (NEW, 2)]

        server.cut_streams(3, code=None)  # the stream just ends, short of its stop block
        server.message_delay = 0.001
        assert _stream(server.url, start_block_num=1, stop_block_num=6) == [
            (NEW, n) for n in (1, 2, 3)
        ]
        server.fail_next(1, grpc.StatusCode.INTERNAL, method="Block")
        assert _stream(server.url, start_block_num=1, stop_block_num=1) == [(NEW, 1)]
        assert server.blocks_calls == 6 and server.fetch_calls == 0


def _fetch(url: str, **reference) -> pb.Block:
    with _channel(url) as channel:
        call = channel.unary_unary(
            "/sf.firehose.v2.Fetch/Block",
            request_serializer=fh.SingleBlockRequest.SerializeToString,
            response_deserializer=fh.SingleBlockResponse.FromString,
        )
        return pb.Block.FromString(call(fh.SingleBlockRequest(**reference), timeout=30).block.value)


def test_fetch_single_blocks(chain: Chain) -> None:
    Ref = fh.SingleBlockRequest
    with FirehoseServer(chain.blocks[:-3] + chain.fork_a, final_depth=5) as server:
        server.reorg(chain.blocks[-3:])
        assert _fetch(server.url, block_number=Ref.BlockNumber(num=5)) == chain.blocks[5]
        old = chain.fork_a[0]
        by_hash = Ref.BlockHashAndNumber(num=old.number, hash=old.hash.hex())
        assert _fetch(server.url, block_hash_and_number=by_hash) == old
        cursor = Cursor(NEW, 6, chain.blocks[6].hash, 0).encode()
        assert _fetch(server.url, cursor=Ref.Cursor(cursor=cursor)) == chain.blocks[6]
        with pytest.raises(grpc.RpcError) as caught:
            _fetch(server.url, block_number=Ref.BlockNumber(num=chain.head + 1))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert server.fetch_calls == 4 and server.blocks_calls == 0


def test_gzip_both_ways(chain: Chain) -> None:
    with FirehoseServer(chain.blocks, follow=False, accept_gzip=False) as server:
        error = _error(server.url, compression=grpc.Compression.Gzip, stop_block_num=2)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED and "gzip" in error.details()
        assert len(_stream(server.url, stop_block_num=2)) == 3
    sizes = {}
    for gzip in (False, True):
        with FirehoseServer(chain.blocks, follow=False, gzip_responses=gzip) as server:
            with CountingRelay(server.port) as relay:
                got = _stream(relay.url, compression=grpc.Compression.Gzip)
            assert len(got) == len(chain.blocks)
            sizes[gzip] = relay.received
    assert sizes[True] < sizes[False] / 2


def test_the_server_as_a_process(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "chain.blocks"
    save_blocks(path, chain.blocks)
    port = free_port()
    args = ["--blocks", str(path), "--port", str(port), "--token", "t0k", "--no-follow"]
    with FirehoseServerProcess(args, tmp_path / "server.log") as process:
        assert process.url == f"http://127.0.0.1:{port}"
        with _channel(process.url) as channel:
            got = [pb.Block.FromString(r.block.value) for r in _open(channel, token="t0k")]
        assert got == chain.blocks
        assert process.stop() == 0
    built = ["--rpc-url", chain.anvil.url, "--from", "2", "--to", "5", "--no-follow"]
    with FirehoseServerProcess(built, tmp_path / "built.log") as process:
        assert _stream(process.url) == [(NEW, n) for n in range(2, 6)]
    assert process.proc.returncode == 0
