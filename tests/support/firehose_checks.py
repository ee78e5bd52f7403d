"""Checks of Firehose Blocks against the node they were built from, with the test's own reads.

`node_view(anvil, numbers)` fetches, with `Anvil.rpc` (not the builder's client), each block,
its receipts and each transaction's `debug_traceTransaction` call tree (the builder traces
whole blocks instead). The `check_*` functions assert, field by field, that a Block says what
the node says; `tracer_calls` flattens a call-tracer tree with a plain pre-order walk, shared
with nothing in `support.firehose_calls`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ampd.providers.firehose.proto import ethereum_pb2 as pb

TRACER = {"tracer": "callTracer", "tracerConfig": {"withLog": True}}
TYPES = {"CALL": 1, "CALLCODE": 2, "DELEGATECALL": 3, "STATICCALL": 4, "CREATE": 5, "CREATE2": 5}


@dataclass
class NodeBlock:
    block: dict[str, Any]
    receipts: list[dict[str, Any]]
    traces: list[dict[str, Any]]  # one debug_traceTransaction tree per transaction


def node_view(anvil: Any, numbers: range | list[int]) -> dict[int, NodeBlock]:
    out = {}
    for n in numbers:
        block = anvil.rpc("eth_getBlockByNumber", hex(n), True)
        receipts = anvil.rpc("eth_getBlockReceipts", hex(n)) or []
        traces = [
            anvil.rpc("debug_traceTransaction", t["hash"], TRACER) for t in block["transactions"]
        ]
        out[n] = NodeBlock(block, receipts, traces)
    return out


def num(value: str | None) -> int:
    return int(value, 16) if value else 0


def raw(value: str | None) -> bytes:
    return bytes.fromhex(value[2:]) if value and value != "0x" else b""


def big(message: Any, field: str) -> int | None:
    """The integer of an optional BigInt field (None when unset)."""
    return int.from_bytes(getattr(message, field).bytes, "big") if message.HasField(field) else None


def check_header(block: pb.Block, node: dict[str, Any]) -> None:
    h = block.header
    assert block.number == h.number == num(node["number"])
    assert block.hash == h.hash == raw(node["hash"])
    assert block.size == num(node["size"])
    assert block.ver == 4 and block.detail_level == pb.Block.DETAILLEVEL_EXTENDED
    pairs = {
        "parent_hash": "parentHash",
        "uncle_hash": "sha3Uncles",
        "coinbase": "miner",
        "state_root": "stateRoot",
        "transactions_root": "transactionsRoot",
        "receipt_root": "receiptsRoot",
        "logs_bloom": "logsBloom",
        "extra_data": "extraData",
        "mix_hash": "mixHash",
        "withdrawals_root": "withdrawalsRoot",
        "parent_beacon_root": "parentBeaconBlockRoot",
    }
    for field, key in pairs.items():
        assert getattr(h, field) == raw(node.get(key)), (block.number, field)
    for field, key in {"gas_limit": "gasLimit", "gas_used": "gasUsed", "nonce": "nonce"}.items():
        assert getattr(h, field) == num(node[key]), (block.number, field)
    assert h.timestamp.seconds == num(node["timestamp"]) and h.timestamp.nanos == 0
    assert big(h, "difficulty") == num(node["difficulty"])
    assert big(h, "total_difficulty") == num(node["totalDifficulty"])
    assert (big(h, "base_fee_per_gas") or None) == (num(node.get("baseFeePerGas")) or None)
    for field, key in {"blob_gas_used": "blobGasUsed", "excess_blob_gas": "excessBlobGas"}.items():
        value = getattr(h, field) if h.HasField(field) else None
        assert value == (num(node[key]) if key in node else None), (block.number, field)


def check_transactions(block: pb.Block, node: NodeBlock) -> None:
    txs = node.block["transactions"]
    assert len(block.transaction_traces) == len(txs) == len(node.receipts)
    for trace, tx, receipt in zip(block.transaction_traces, txs, node.receipts, strict=True):
        kind = num(tx["type"])
        where = (block.number, tx["hash"])
        assert trace.hash == raw(tx["hash"]) and trace.index == num(tx["transactionIndex"])
        assert getattr(trace, "from") == raw(tx["from"]), where
        assert trace.to == raw(tx.get("to") or receipt["contractAddress"]), where
        assert trace.type == kind and trace.nonce == num(tx["nonce"]), where
        assert trace.gas_limit == num(tx["gas"]) and trace.input == raw(tx["input"]), where
        assert (big(trace, "value") or 0) == num(tx["value"]), where
        price = receipt["effectiveGasPrice"] if kind >= 2 else tx["gasPrice"]
        assert big(trace, "gas_price") == num(price), where
        fees = (big(trace, "max_fee_per_gas"), big(trace, "max_priority_fee_per_gas"))
        if kind >= 2:
            assert fees == (num(tx["maxFeePerGas"]), num(tx["maxPriorityFeePerGas"])), where
        else:
            assert fees == (None, None), where
        assert int.from_bytes(trace.v, "big") == num(tx["v"]), where
        assert trace.r == num(tx["r"]).to_bytes(32, "big"), where
        assert trace.s == num(tx["s"]).to_bytes(32, "big"), where
        access = [(a.address, list(a.storage_keys)) for a in trace.access_list]
        expected = [
            (raw(a["address"]), [raw(k) for k in a["storageKeys"]])
            for a in tx.get("accessList") or ()
        ]
        assert access == expected, where
        assert trace.gas_used == num(receipt["gasUsed"]), where
        r = trace.receipt
        assert r.cumulative_gas_used == num(receipt["cumulativeGasUsed"]), where
        assert r.logs_bloom == raw(receipt["logsBloom"]), where
        ok = num(receipt["status"]) == 1
        assert (trace.status == pb.SUCCEEDED) == ok, where
        if not ok:
            assert trace.status == (pb.REVERTED if trace.calls[0].status_reverted else pb.FAILED)
        if kind == 3:
            assert trace.blob_gas == 131072 * len(tx["blobVersionedHashes"]), where
            assert list(trace.blob_hashes) == [raw(x) for x in tx["blobVersionedHashes"]]
            assert big(trace, "blob_gas_fee_cap") == num(tx["maxFeePerBlobGas"]), where
            assert r.blob_gas_used == num(receipt["blobGasUsed"]), where
            assert big(r, "blob_gas_price") == num(receipt["blobGasPrice"]), where
        else:
            assert not r.HasField("blob_gas_used") and not trace.HasField("blob_gas"), where
        check_logs(trace, receipt)


def check_logs(trace: pb.TransactionTrace, receipt: dict[str, Any]) -> None:
    """Receipt logs equal the node's; the kept calls' logs equal them, in ordinal order."""
    expected = [
        (raw(x["address"]), [raw(t) for t in x["topics"]], raw(x["data"]), num(x["logIndex"]))
        for x in receipt["logs"]
    ]
    ours = [(x.address, list(x.topics), x.data, x.blockIndex) for x in trace.receipt.logs]
    assert ours == expected, trace.hash.hex()
    assert [x.index for x in trace.receipt.logs] == list(range(len(expected)))
    kept = sorted(
        (log for c in trace.calls if not c.state_reverted for log in c.logs),
        key=lambda x: x.ordinal,
    )
    assert [(x.address, list(x.topics), x.data, x.blockIndex) for x in kept] == expected
    assert [x.ordinal for x in kept] == [x.ordinal for x in trace.receipt.logs]
    assert [x.index for x in kept] == list(range(len(expected)))
    for call in trace.calls:
        if call.state_reverted:
            assert all(x.index == 0 and x.blockIndex == 0 for x in call.logs)


def tracer_calls(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """Pre-order list of frames, each with `depth` and 1-based `parent` (SELFDESTRUCT skipped)."""
    out: list[dict[str, Any]] = []

    def walk(f: dict[str, Any], depth: int, parent: int) -> None:
        out.append({**f, "depth": depth, "parent": parent})
        me = len(out)
        for child in f.get("calls") or ():
            if child["type"] != "SELFDESTRUCT":
                walk(child, depth + 1, me)

    walk(frame, 0, 0)
    return out


def check_calls(trace: pb.TransactionTrace, frame: dict[str, Any], tx: dict[str, Any]) -> None:
    """The calls have the tree's shape, types, parties, gas, data and statuses."""
    frames = tracer_calls(frame)
    assert len(trace.calls) == len(frames), trace.hash.hex()
    for i, (call, f) in enumerate(zip(trace.calls, frames, strict=True), start=1):
        where = (trace.hash.hex(), i)
        assert (call.index, call.parent_index, call.depth) == (i, f["parent"], f["depth"]), where
        assert call.call_type == TYPES[f["type"]], where
        assert call.caller == raw(f["from"]) and call.address == raw(f["to"]), where
        assert call.gas_limit == num(f["gas"]), where
        if f["depth"] > 0:
            assert call.gas_consumed == num(f["gasUsed"]), where
        else:  # the tracer's root gasUsed is the receipt's; Firehose's excludes intrinsic gas
            intrinsic = num(tx["gas"]) - num(f["gas"])  # (a set-code refund can undercut it)
            assert call.gas_consumed == max(0, trace.gas_used - intrinsic), where
        assert call.input == raw(f.get("input")), where
        create = f["type"] in ("CREATE", "CREATE2")
        assert call.return_data == (b"" if create else raw(f.get("output"))), where
        assert call.status_failed == ("error" in f), where
        assert call.failure_reason == f.get("error", ""), where
        if "error" in f:
            assert call.status_reverted == (f["error"] == "execution reverted"), where
        parent_reverted = call.parent_index and trace.calls[call.parent_index - 1].state_reverted
        assert call.state_reverted == bool(call.status_failed or parent_reverted), where
        value = None if f["type"] == "STATICCALL" else num(f.get("value")) or None
        if f["type"] == "DELEGATECALL":
            value = big(trace.calls[call.parent_index - 1], "value")
        assert big(call, "value") == value, where
        if not call.state_reverted:  # logs of reverted frames: the tracers drop them
            ours = [(x.address, list(x.topics), x.data) for x in call.logs]
            theirs = [
                (raw(x["address"]), [raw(t) for t in x["topics"]], raw(x["data"]))
                for x in f.get("logs") or ()
            ]
            assert ours == theirs, where


def check_ordinals(block: pb.Block) -> None:
    """Ordinals are unique, increase in execution order, and nest calls inside their parents."""
    seen: list[int] = []
    for trace in block.transaction_traces:
        seen.append(trace.begin_ordinal)
        spans = {c.index: (c.begin_ordinal, c.end_ordinal) for c in trace.calls}
        for call in trace.calls:
            begin, end = spans[call.index]
            assert trace.begin_ordinal < begin < end < trace.end_ordinal
            if call.parent_index:
                parent = spans[call.parent_index]
                assert parent[0] < begin and end < parent[1]
            assert all(begin < x.ordinal < end for x in call.logs)
            seen += [begin, end, *(x.ordinal for x in call.logs)]
        seen.append(trace.end_ordinal)
    assert len(set(seen)) == len(seen) and min(seen, default=1) >= 1
    order = [o for t in block.transaction_traces for o in (t.begin_ordinal, t.end_ordinal)]
    assert order == sorted(order)
