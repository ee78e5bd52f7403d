"""Firehose `sf.ethereum.type.v2.Block` messages built from a node's JSON-RPC, and block files.

`build_blocks(url, start, end)` reads each block (`eth_getBlockByNumber` with transactions,
`eth_getBlockReceipts`, `debug_traceBlockByNumber` with the call tracer and its logs, falling
back to `debug_traceTransaction` per transaction) in batched JSON-RPC requests, and fills the
fields Firehose's Ethereum extractor fills at detail level EXTENDED, from what the node says:

- the header, every field the node has (`difficulty` is `\\x00` when zero, as Firehose writes
  it; `total_difficulty` when the node reports one; the blob gas fields when present);
- per transaction its fields (`to` is the new contract's address for a contract creation, as
  in Firehose), the receipt and its logs, `status` (REVERTED when the root call reverted),
  `gas_used`, the blob fields of type 3, `return_data` (the root call's output), and the
  calls of `support.firehose_calls` with their logs. BigInts are absent when zero.
- `ver` 4 (Firehose's number for blocks without its backward-compatibility quirks).

Not filled: balance, nonce, storage, code and gas changes, keccak preimages, system calls,
`public_key` (a node's JSON-RPC has none of them). `executed_code` needs each call target's
code: `eth_getCode`, batched, cached per address until a CREATE, SELFDESTRUCT or set-code
transaction may change it.

Tracing needs the block's parent state: anvil keeps it for its newest few thousand blocks
only (none of a history loaded with --load-state, one with a bare --prune-history), so build
a long chain's blocks while mining it, a range at a time (a BlockBuilder is reusable, and
`save_blocks(..., append=True)` extends a file).

Block files hold length-delimited messages (a varint length, then the serialized Block),
the way protobuf's `writeDelimitedTo` writes them: `save_blocks`, `load_blocks`,
`read_serialized`. CLI: `python -m support.firehose_blocks --rpc-url URL --from N --to M
--out FILE` (from tests/, or `tests.support.firehose_blocks` from the repository root).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ampd.providers.firehose.proto import ethereum_pb2 as pb

from .firehose_calls import (
    address,
    big_int,
    call_targets,
    code_changes,
    flatten_calls,
    hex_bytes,
    pair_receipt_logs,
)
from .firehose_rpc import BatchRpc, RpcError

TRACER = {"tracer": "callTracer", "tracerConfig": {"withLog": True}}
BLOB_GAS_PER_BLOB = 131072
EXTENDED_VER = 4


def _int(value: str | None) -> int:
    return int(value, 16) if value else 0


def _hash(value: str | None) -> bytes:
    return hex_bytes(value).rjust(32, b"\0") if value else b""


def _signature_point(value: str | None) -> bytes:
    number = _int(value)  # 32 bytes, or none at all for a zero (impersonated senders)
    return number.to_bytes(32, "big") if number else b""


def header_from_json(block: dict[str, Any]) -> pb.BlockHeader:
    """The Firehose header of a node's `eth_getBlockByNumber` answer."""
    header = pb.BlockHeader(
        hash=_hash(block["hash"]),
        number=_int(block["number"]),
        parent_hash=_hash(block["parentHash"]),
        uncle_hash=_hash(block["sha3Uncles"]),
        coinbase=address(block["miner"]),
        state_root=_hash(block["stateRoot"]),
        transactions_root=_hash(block["transactionsRoot"]),
        receipt_root=_hash(block["receiptsRoot"]),
        logs_bloom=hex_bytes(block["logsBloom"]),
        difficulty=big_int(block.get("difficulty"), keep_zero=True),
        gas_limit=_int(block["gasLimit"]),
        gas_used=_int(block["gasUsed"]),
        extra_data=hex_bytes(block.get("extraData")),
        mix_hash=_hash(block.get("mixHash")) or bytes(32),
        nonce=_int(block.get("nonce")),
        withdrawals_root=_hash(block.get("withdrawalsRoot")),
        parent_beacon_root=_hash(block.get("parentBeaconBlockRoot")),
    )
    header.timestamp.seconds = _int(block["timestamp"])
    if block.get("totalDifficulty") is not None:
        header.total_difficulty.CopyFrom(big_int(block["totalDifficulty"], keep_zero=True))
    if (base_fee := big_int(block.get("baseFeePerGas"))) is not None:
        header.base_fee_per_gas.CopyFrom(base_fee)
    if block.get("blobGasUsed") is not None:
        header.blob_gas_used = _int(block["blobGasUsed"])
    if block.get("excessBlobGas") is not None:
        header.excess_blob_gas = _int(block["excessBlobGas"])
    return header


def precompiles(block: dict[str, Any]) -> frozenset[str]:
    """The precompile addresses active at this block, told by the header fields it has."""
    if "requestsHash" in block:  # prague: the BLS12-381 ones up to 0x11
        last = 0x11
    elif "blobGasUsed" in block:  # cancun: the KZG point evaluation, 0x0a
        last = 0x0A
    else:
        last = 0x09
    return frozenset("0x" + n.to_bytes(20, "big").hex() for n in range(1, last + 1))


def transaction_trace(
    tx: dict[str, Any], receipt: dict[str, Any], frame: dict[str, Any], ordinals, has_code
) -> pb.TransactionTrace:
    """One transaction as Firehose traces it (see the module docstring)."""
    tx_type = _int(tx.get("type"))
    to = tx.get("to") or receipt.get("contractAddress")
    trace = pb.TransactionTrace(
        to=address(to) if to else b"",
        nonce=_int(tx["nonce"]),
        gas_limit=_int(tx["gas"]),
        input=hex_bytes(tx.get("input")),
        v=hex_bytes(hex(_int(tx.get("v")))) if _int(tx.get("v")) else b"",
        r=_signature_point(tx.get("r")),
        s=_signature_point(tx.get("s")),
        gas_used=_int(receipt["gasUsed"]),
        type=tx_type,
        index=_int(receipt["transactionIndex"]),
        hash=_hash(tx["hash"]),
        status=pb.SUCCEEDED if _int(receipt.get("status")) == 1 else pb.FAILED,
        begin_ordinal=next(ordinals),
    )
    price = receipt.get("effectiveGasPrice") if tx_type >= 2 else tx.get("gasPrice")
    for field, value in (
        ("gas_price", big_int(price or tx.get("gasPrice"))),
        ("value", big_int(tx.get("value"))),
    ):
        if value is not None:
            getattr(trace, field).CopyFrom(value)
    setattr(trace, "from", address(tx["from"]))
    if tx_type >= 2:
        for field, key in (
            ("max_fee_per_gas", "maxFeePerGas"),
            ("max_priority_fee_per_gas", "maxPriorityFeePerGas"),
        ):
            if (value := big_int(tx.get(key))) is not None:
                getattr(trace, field).CopyFrom(value)
    for entry in tx.get("accessList") or ():
        trace.access_list.add(
            address=address(entry["address"]),
            storage_keys=[_hash(k) for k in entry.get("storageKeys") or ()],
        )
    receipt_pb = trace.receipt
    receipt_pb.state_root = _hash(receipt.get("root"))
    receipt_pb.cumulative_gas_used = _int(receipt["cumulativeGasUsed"])
    receipt_pb.logs_bloom = hex_bytes(receipt["logsBloom"])
    for i, log in enumerate(receipt.get("logs") or ()):
        receipt_pb.logs.add(
            address=address(log["address"]),
            topics=[_hash(t) for t in log.get("topics") or ()],
            data=hex_bytes(log.get("data")),
            index=i,
            blockIndex=_int(log["logIndex"]),
        )
    if tx_type == 3:
        hashes = tx.get("blobVersionedHashes") or []
        trace.blob_gas = BLOB_GAS_PER_BLOB * len(hashes)
        trace.blob_hashes.extend(_hash(h) for h in hashes)
        if (cap := big_int(tx.get("maxFeePerBlobGas"))) is not None:
            trace.blob_gas_fee_cap.CopyFrom(cap)
        receipt_pb.blob_gas_used = _int(receipt.get("blobGasUsed"))
        if (blob_price := big_int(receipt.get("blobGasPrice"))) is not None:
            receipt_pb.blob_gas_price.CopyFrom(blob_price)

    intrinsic = _int(tx["gas"]) - _int(frame.get("gas"))
    consumed = max(0, _int(receipt["gasUsed"]) - intrinsic)
    trace.calls.extend(flatten_calls(frame, ordinals, has_code, consumed))
    root = trace.calls[0]
    if root.status_reverted:
        trace.status = pb.REVERTED
    if root.call_type != pb.CREATE:
        trace.return_data = root.return_data
    pair_receipt_logs(trace)
    trace.end_ordinal = next(ordinals)
    return trace


def block_from_json(
    block: dict[str, Any],
    receipts: list[dict[str, Any]],
    frames: list[dict[str, Any]],
    has_code,
) -> pb.Block:
    """The Firehose Block of one node block, its receipts and its transactions' call frames."""
    header = header_from_json(block)
    out = pb.Block(
        hash=header.hash,
        number=header.number,
        size=_int(block.get("size")),
        header=header,
        ver=EXTENDED_VER,
        detail_level=pb.Block.DETAILLEVEL_EXTENDED,
    )
    by_hash = {r["transactionHash"]: r for r in receipts}
    ordinals = itertools.count(1)
    for tx, frame in zip(block["transactions"], frames, strict=True):
        out.transaction_traces.append(
            transaction_trace(tx, by_hash[tx["hash"]], frame, ordinals, has_code)
        )
    return out


class BlockBuilder:
    """Builds Blocks from one node; keeps what it learnt of accounts' code between calls."""

    def __init__(self, url: str, batch_blocks: int = 50, workers: int = 3) -> None:
        self.url = url
        self.batch_blocks = batch_blocks
        self.workers = workers
        self._code: dict[str, bool] = {}
        self._trace_blocks = True

    def blocks(self, start: int, end: int) -> Iterator[pb.Block]:
        """Blocks `start..end` (inclusive), in order."""
        chunks = [
            range(n, min(n + self.batch_blocks, end + 1))
            for n in range(start, end + 1, self.batch_blocks)
        ]
        clients = [BatchRpc(self.url) for _ in range(max(1, self.workers))]
        free = list(clients)
        code_rpc = BatchRpc(self.url)
        try:
            with ThreadPoolExecutor(len(clients)) as pool:

                def fetch(numbers: range) -> list[tuple[dict, list, list]]:
                    rpc = free.pop()
                    try:
                        return self._fetch(rpc, numbers)
                    finally:
                        free.append(rpc)

                pending = [pool.submit(fetch, c) for c in chunks[: len(clients)]]
                for i in range(len(chunks)):
                    raw = pending[i].result()
                    if i + len(clients) < len(chunks):
                        pending.append(pool.submit(fetch, chunks[i + len(clients)]))
                    yield from self._convert(code_rpc, raw)
        finally:
            for rpc in [*clients, code_rpc]:
                rpc.close()

    def _fetch(self, rpc: BatchRpc, numbers: range) -> list[tuple[dict, list, list]]:
        trace_blocks = self._trace_blocks  # (another thread may turn it off meanwhile)
        calls: list[tuple[str, list[Any]]] = []
        for n in numbers:
            calls += [("eth_getBlockByNumber", [hex(n), True]), ("eth_getBlockReceipts", [hex(n)])]
            if trace_blocks:
                calls.append(("debug_traceBlockByNumber", [hex(n), TRACER]))
        answers = rpc.batch(calls)
        step = 3 if trace_blocks else 2
        out, retrace = [], []
        for i, n in enumerate(numbers):
            block, receipts = (
                _result(calls[i * step + k][0], answers[i * step + k]) for k in (0, 1)
            )
            if block is None:
                raise RpcError("eth_getBlockByNumber", {"message": f"the node has no block {n}"})
            frames = None
            if trace_blocks:
                traced = answers[i * step + 2]
                if "error" not in traced:
                    frames = [
                        _result("debug_traceBlockByNumber", item) for item in traced["result"]
                    ]
                elif traced["error"].get("code") == -32601:  # no such method: trace per tx
                    self._trace_blocks = False
            if frames is None and block["transactions"]:
                retrace.append(len(out))
            out.append((block, receipts or [], frames or []))
        if retrace:  # no block tracing: one debug_traceTransaction per transaction
            tx_calls = [
                ("debug_traceTransaction", [tx["hash"], TRACER])
                for j in retrace
                for tx in out[j][0]["transactions"]
            ]
            frames = iter(rpc.results(tx_calls))
            for j in retrace:
                out[j] = (out[j][0], out[j][1], [next(frames) for _ in out[j][0]["transactions"]])
        return out

    def _convert(self, rpc: BatchRpc, raw: list[tuple[dict, list, list]]) -> Iterator[pb.Block]:
        # Which (address, block) pairs need eth_getCode: walk the blocks in order, forgetting
        # what a block's creations, self-destructs or set-code transactions may have changed.
        known = set(self._code)
        lookups: list[tuple[str, str]] = []
        changed: list[set[str]] = []
        for block, _, frames in raw:
            skip = precompiles(block)
            for frame in frames:
                for target in call_targets(frame) - known - skip:
                    lookups.append((target, block["number"]))
                    known.add(target)
            changes = set().union(*(code_changes(f) for f in frames)) if frames else set()
            if any(_int(tx.get("type")) == 4 for tx in block["transactions"]):
                changes |= known  # a set-code transaction: authorities are not in the JSON
            known -= changes
            changed.append(changes)
        codes = rpc.results([("eth_getCode", [a, n]) for a, n in lookups]) if lookups else []
        found: dict[str, list[tuple[str, bool]]] = {}
        for (addr, number), code in zip(lookups, codes, strict=True):
            found.setdefault(number, []).append((addr, code not in (None, "", "0x")))
        for (block, receipts, frames), changes in zip(raw, changed, strict=True):
            self._code.update(found.get(block["number"], ()))
            skip = precompiles(block)

            def has_code(addr: str, skip: frozenset[str] = skip) -> bool:
                return addr in skip or self._code.get(addr, False)

            yield block_from_json(block, receipts, frames, has_code)
            for addr in changes:
                self._code.pop(addr, None)


def _result(method: str, answer: dict[str, Any]) -> Any:
    if "error" in answer:
        raise RpcError(method, answer["error"])
    return answer["result"]


def build_blocks(url: str, start: int, end: int, **kwargs: Any) -> list[pb.Block]:
    """Blocks `start..end` (inclusive) of the node at `url`; see BlockBuilder for options."""
    return list(BlockBuilder(url, **kwargs).blocks(start, end))


# --- block files: length-delimited serialized Blocks ---


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def save_blocks(
    path: str | os.PathLike[str], blocks: Iterable[pb.Block | bytes], append: bool = False
) -> int:
    """Write `blocks` (messages or their serialized bytes) to `path`, replacing it whole, or
    at its end with `append`; return how many."""
    n = 0
    target = Path(path) if append else Path(f"{path}.tmp")
    with open(target, "ab" if append else "wb") as out:
        for block in blocks:
            data = block if isinstance(block, bytes) else block.SerializeToString()
            out.write(varint(len(data)) + data)
            n += 1
    if not append:
        target.replace(path)
    return n


def read_serialized(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The serialized Blocks of a block file, in order, without parsing them."""
    data = memoryview(Path(path).read_bytes())
    pos = 0
    while pos < len(data):
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if pos + length > len(data):
            raise ValueError(f"{path}: truncated block at byte {pos}")
        yield bytes(data[pos : pos + length])
        pos += length


def load_blocks(path: str | os.PathLike[str]) -> list[pb.Block]:
    """The Blocks of a block file."""
    return [pb.Block.FromString(data) for data in read_serialized(path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build Firehose blocks from a node's JSON-RPC.")
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--from", dest="start", type=int, required=True)
    parser.add_argument("--to", dest="end", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-blocks", type=int, default=50)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args(argv)
    began = time.monotonic()
    builder = BlockBuilder(args.rpc_url, batch_blocks=args.batch_blocks, workers=args.workers)
    n = save_blocks(args.out, builder.blocks(args.start, args.end))
    took = time.monotonic() - began
    print(f"wrote {n} blocks to {args.out} in {took:.1f}s ({n / max(took, 1e-9):.0f} blocks/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
