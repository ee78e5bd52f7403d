"""`"ns/name[@rev]".eth_call(from, to, input, block)`: a read-only contract call per row,
answered by the JSON-RPC providers of the dataset that qualifies the call.

The call is found in the SQL text with its qualifier (`qualified_calls`), the dataset it
names gives the network and so the providers (`EthCaller`), and `prepare` registers a UDF
for the call's argument types like the other functions that take several. Each batch of
rows becomes one set of `eth_call` requests, the same request sent once, in JSON-RPC batches
of the provider's `rpc_batch_size` under its request limits, each retried up to 3 times.
A JSON-RPC error with code 3 or -32000 (a revert) is the row's answer: its `data` decoded
from hex and its `message`; a call that fails every attempt answers `message` "unexpected
rpc error". The result is Amp's struct `{data: Binary, message: Utf8}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ampd.providers.config import ProviderConfig
from ampd.providers.evm_rpc.client import CallError, CallFailed
from ampd.providers.evm_rpc.pool import ProviderPool
from ampd.sql.functions.common import Built
from ampd.sql.functions.errors import FunctionError, df_type_name
from ampd.sql.functions.sql_text import Call, Token, call_args, field_after, tokenize

NAME = "eth_call"
ATTEMPTS = 3  # Amp's: each call is tried three times
REVERT_CODES = (3, -32000)  # JSON-RPC error codes that are a call's answer, not a fault
RESULT = pa.struct([pa.field("data", pa.binary()), pa.field("message", pa.utf8())])
_TAGS = ("latest", "pending", "earliest", "finalized", "safe")
_MAX_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class QualifiedCall:
    """A `qualifier.eth_call(...)` call: `call.token` spans the qualifier and the name."""

    call: Call
    qualifier: str  # the dataset reference, unquoted
    written: str  # the qualified name as the query wrote it: Amp's messages start with it


def qualified_calls(sql: str) -> list[QualifiedCall]:
    """Every `<dataset>.eth_call(...)` in `sql` (the dataset quoted or not), in order."""
    tokens = [t for t in tokenize(sql) if not t.trivia]
    found = []
    for i in range(len(tokens) - 3):
        qualifier, dot, name, paren = tokens[i : i + 4]
        if (
            qualifier.kind in ("ident", "qident")
            and dot.text == "."
            and name.kind == "ident"
            and name.value == NAME
            and paren.text == "("
            and not (i > 0 and tokens[i - 1].text == ".")
        ):
            args, close = call_args(tokens, i + 2)
            span = Token("qualified", qualifier.start, name.end, sql[qualifier.start : name.end])
            found.append(
                QualifiedCall(
                    Call(NAME, span, args, field_after(tokens, i, close)),
                    qualifier.value,
                    f"{qualifier.text}.{NAME}",
                )
            )
    return found


class EthCaller:
    """The providers of one dataset's network, for the eth_call UDFs of one query."""

    def __init__(self, providers: Sequence[ProviderConfig]) -> None:
        self.providers = list(providers)

    def call(self, requests: list[tuple[dict[str, str], str]]) -> list[Any]:
        """Answer each (transaction, block) with its hex result, a CallError or a CallFailed.
        Runs its own event loop: it is called from DataFusion's threads."""
        return asyncio.run(self._call(requests))

    async def _call(self, requests: list[tuple[dict[str, str], str]]) -> list[Any]:
        pool = ProviderPool(self.providers, max_attempts=ATTEMPTS, backoff_cap=1.0)
        async with pool:
            return await pool.call_each(
                [("eth_call", [tx, block]) for tx, block in requests],
                lambda error: error.get("code") in REVERT_CODES,
            )


def build(site: QualifiedCall, types: list[pa.DataType | str], caller: EthCaller) -> Built:
    """The UDF of one eth_call site for its argument types; raises FunctionError where Amp
    refuses the types."""
    name = site.written
    if len(types) != 4:
        raise FunctionError(f"{name}: expected 4 arguments, but got {len(types)}")
    frm, to, data, block = types
    if not (frm == pa.null() or frm == pa.binary(20)):
        raise FunctionError(f"{name}: 'from' address is not a valid address")
    if to != pa.binary(20):
        raise FunctionError(f"{name}: 'to' address is not a valid address")
    if not (data == pa.null() or data == pa.binary()):
        raise FunctionError(f"{name}: input data is not a valid data")
    if block not in (pa.string(), pa.uint64(), pa.int64()):
        shown = block if isinstance(block, str) else df_type_name(block)
        raise FunctionError(f"{name}: 'block' is not a valid block number or tag: {shown}")

    def body(frm: pa.Array, to: pa.Array, data: pa.Array, block: pa.Array) -> pa.Array:
        return _answer(caller, frm, to, data, block)

    return Built(body, list(types), pa.field(NAME, RESULT), volatility="volatile")


def _answer(
    caller: EthCaller, frm: pa.Array, to: pa.Array, data: pa.Array, block: pa.Array
) -> pa.Array:
    blocks = [_block(b) for b in block.to_pylist()]
    senders = frm.to_pylist() if frm.type != pa.null() else [None] * len(block)
    inputs = data.to_pylist() if data.type != pa.null() else [None] * len(block)
    requests: dict[tuple[Any, ...], int] = {}
    rows = []
    for sender, target, payload, tag in zip(senders, to.to_pylist(), inputs, blocks, strict=True):
        if target is None:
            raise FunctionError("to address is NULL")
        key = (sender, target, payload, tag)
        rows.append(requests.setdefault(key, len(requests)))
    answers = (
        caller.call([(_transaction(*key[:3]), key[3]) for key in requests]) if requests else []
    )
    out_data: list[bytes | None] = []
    out_message: list[str | None] = []
    for k in rows:
        answer = answers[k]
        if isinstance(answer, CallError):
            out_data.append(_hex_bytes(answer.data))
            out_message.append(answer.message or None)
        elif isinstance(answer, CallFailed):
            out_data.append(None)
            out_message.append("unexpected rpc error")
        else:
            out_data.append(_hex_bytes(answer))
            out_message.append(None)
    return pa.StructArray.from_arrays(
        [pa.array(out_data, pa.binary()), pa.array(out_message, pa.utf8())],
        fields=list(RESULT),
    )


def _transaction(sender: bytes | None, target: bytes, payload: bytes | None) -> dict[str, str]:
    tx = {"to": "0x" + target.hex()}
    if sender is not None:
        tx["from"] = "0x" + sender.hex()
    if payload is not None:
        tx["input"] = "0x" + payload.hex()
    return tx


def _block(value: Any) -> str:
    """A `block` argument as the JSON-RPC block parameter."""
    if value is None:
        raise FunctionError("'block' is NULL")
    if isinstance(value, int):
        if value < 0:
            raise FunctionError(f"block number cannot be negative: {value}")
        return hex(value)
    text = str(value)
    if text.isdigit() and int(text) <= _MAX_U64:
        return hex(int(text))
    if text.startswith("0x"):
        try:
            number = int(text[2:], 16)
        except ValueError:
            number = -1
        if 0 <= number <= _MAX_U64 and text[2:]:
            return hex(number)
    if text.lower() in _TAGS:  # as alloy's BlockNumberOrTag reads them
        return text.lower()
    raise FunctionError('block is not a valid integer, "0x" prefixed hex integer, or tag')


def _hex_bytes(value: Any) -> bytes | None:
    """A JSON-RPC hex string as bytes; None when it is not one."""
    if not isinstance(value, str):
        return None
    text = value.strip('"')
    text = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
