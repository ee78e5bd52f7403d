"""A transaction's call tree, from a node's call tracer, as the flat list of Firehose calls.

The input is one transaction's frame of `callTracer` with `{"withLog": true}` (geth's shape,
which anvil gives too): nested `calls`, and per frame `logs` whose `position` says how many
child frames ran before each log. The output follows Firehose's Ethereum tracer for a chain
without its backward-compatibility quirks:

- calls in execution (start) order, `index` 1-based, `parent_index` 0 for the root, `depth`
  0 for the root; CREATE and CREATE2 are both `CREATE`; a SELFDESTRUCT frame is no call of
  its own but sets `suicide` on the call that ran it;
- `status_failed` when the frame has an error, `status_reverted` too when that error is a
  revert (or an insufficient balance or the depth limit, which Firehose counts as reverts),
  `failure_reason` the node's error text, and `state_reverted` when the call or one of its
  ancestors failed;
- `value` absent when zero; a DELEGATECALL carries its parent's value; a STATICCALL none;
- `input` as the node gives it (init code for CREATE); `return_data` the frame's output,
  except for CREATE, whose output is the new code and is not kept;
- `executed_code` when EVM code ran: a call to an account with code or to a precompile, a
  CREATE with init code; not when the call failed before running (balance, depth);
- ordinals from one block-wide counter, in execution order: the call's `begin_ordinal`, then
  its logs and children interleaved as they ran, then its `end_ordinal`.

Logs of calls that were not state-reverted are paired, in ordinal order, with the receipt's
logs: each takes the receipt's `logIndex` as `blockIndex` and its position in the receipt as
`index`, and the receipt log takes the call log's ordinal. Logs of state-reverted calls keep
`index` and `blockIndex` 0, as Firehose writes them. Call tracers drop most logs of reverted
frames (geth and anvil keep none of a reverted child's logs), so those calls mostly have none.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

from ampd.providers.firehose.proto import ethereum_pb2 as pb

CALL_TYPES = {
    "CALL": pb.CALL,
    "CALLCODE": pb.CALLCODE,
    "DELEGATECALL": pb.DELEGATE,
    "STATICCALL": pb.STATIC,
    "CREATE": pb.CREATE,
    "CREATE2": pb.CREATE,
}
_NO_CODE_RUN = ("insufficient balance", "call depth", "depth limit", "collision")
_REVERT_LIKE = ("revert", "insufficient balance", "call depth", "depth limit")


def hex_bytes(value: str | None) -> bytes:
    """`0x...` as bytes (None and `0x` give b"")."""
    if not value:
        return b""
    try:
        return bytes.fromhex(value[2:])
    except ValueError:  # an odd number of digits, as quantities have
        return bytes.fromhex("0" + value[2:])


def address(value: str | None) -> bytes:
    """A 20-byte address (a missing one gives 20 zero bytes)."""
    return hex_bytes(value).rjust(20, b"\0") if value else bytes(20)


def big_int(value: int | str | None, keep_zero: bool = False) -> pb.BigInt | None:
    """A Firehose BigInt (big-endian, no leading zeros), None for zero unless `keep_zero`."""
    number = int(value, 16) if isinstance(value, str) else (value or 0)
    if number == 0:
        return pb.BigInt(bytes=b"\0") if keep_zero else None
    return pb.BigInt(bytes=number.to_bytes((number.bit_length() + 7) // 8, "big"))


def call_targets(frame: dict[str, Any]) -> set[str]:
    """Addresses (lower-case hex) that calls of this tree ran code at, CREATE excluded."""
    out: set[str] = set()
    stack = [frame]
    while stack:
        f = stack.pop()
        if f.get("type") in CALL_TYPES and CALL_TYPES[f["type"]] != pb.CREATE and f.get("to"):
            out.add(f["to"].lower())
        stack.extend(f.get("calls") or ())
    return out


def code_changes(frame: dict[str, Any]) -> set[str]:
    """Addresses whose code this tree created (CREATE) or destroyed (SELFDESTRUCT)."""
    out: set[str] = set()
    stack = [frame]
    while stack:
        f = stack.pop()
        kind = f.get("type")
        if kind in ("CREATE", "CREATE2") and f.get("to"):
            out.add(f["to"].lower())
        elif kind == "SELFDESTRUCT" and f.get("from"):
            out.add(f["from"].lower())
        stack.extend(f.get("calls") or ())
    return out


def flatten_calls(
    frame: dict[str, Any],
    ordinals: count,
    has_code: Callable[[str], bool],
    root_gas_consumed: int,
) -> list[pb.Call]:
    """The Firehose calls of one transaction's call-tracer `frame` (see module docstring).

    `ordinals` is the block's counter (its next value is the next ordinal); `has_code` says
    whether an address (lower-case hex) holds code or is a precompile; `root_gas_consumed`
    replaces the root frame's `gasUsed`, which tracers report as the receipt's (intrinsic gas
    included, and cumulative over the block in anvil's block traces).
    """
    calls: list[pb.Call] = []

    def visit(f: dict[str, Any], parent: pb.Call | None) -> None:
        kind = CALL_TYPES.get(f.get("type", "CALL"), pb.CALL)
        call = pb.Call(
            index=len(calls) + 1,
            parent_index=parent.index if parent is not None else 0,
            depth=parent.depth + 1 if parent is not None else 0,
            call_type=kind,
            caller=address(f.get("from")),
            address=address(f.get("to")),
            gas_limit=int(f.get("gas", "0x0"), 16),
            input=hex_bytes(f.get("input")),
        )
        calls.append(call)
        if kind == pb.DELEGATE:
            if parent is not None and parent.HasField("value"):
                call.value.CopyFrom(parent.value)
        elif kind != pb.STATIC and (value := big_int(f.get("value"))) is not None:
            call.value.CopyFrom(value)
        call.gas_consumed = root_gas_consumed if parent is None else int(f["gasUsed"], 16)
        if kind != pb.CREATE:
            call.return_data = hex_bytes(f.get("output"))
        error = f.get("error")
        if error:
            call.status_failed = True
            call.failure_reason = error
            call.status_reverted = any(word in error.lower() for word in _REVERT_LIKE)
        call.state_reverted = call.status_failed or (parent is not None and parent.state_reverted)
        call.executed_code = _executed_code(f, kind, call, has_code)

        call.begin_ordinal = next(ordinals)
        children = list(f.get("calls") or ())
        logs = sorted(f.get("logs") or (), key=lambda log: int(log.get("position", "0x0"), 16))
        pending = iter(logs)
        log = next(pending, None)
        for position, child in enumerate([*children, None]):
            while log is not None and (
                child is None or int(log.get("position", "0x0"), 16) <= position
            ):
                call.logs.append(
                    pb.Log(
                        address=address(log["address"]),
                        topics=[hex_bytes(t) for t in log.get("topics") or ()],
                        data=hex_bytes(log.get("data")),
                        ordinal=next(ordinals),
                    )
                )
                log = next(pending, None)
            if child is None:
                break
            if child.get("type") == "SELFDESTRUCT":
                call.suicide = True
            else:
                visit(child, call)
        call.end_ordinal = next(ordinals)

    visit(frame, None)
    return calls


def _executed_code(
    f: dict[str, Any], kind: int, call: pb.Call, has_code: Callable[[str], bool]
) -> bool:
    error = (f.get("error") or "").lower()
    if any(word in error for word in _NO_CODE_RUN):
        return False
    if kind == pb.CREATE:
        return bool(call.input)
    return bool(f.get("to")) and has_code(f["to"].lower())


def pair_receipt_logs(trace: pb.TransactionTrace) -> None:
    """Give the calls' logs and the receipt's logs their indexes and ordinals (see above)."""
    kept = [log for call in trace.calls if not call.state_reverted for log in call.logs]
    kept.sort(key=lambda log: log.ordinal)
    receipt_logs = trace.receipt.logs
    if len(kept) != len(receipt_logs):
        raise ValueError(
            f"transaction 0x{trace.hash.hex()}: the call tracer shows {len(kept)} logs of "
            f"calls that were not reverted, the receipt {len(receipt_logs)}"
        )
    for i, (log, theirs) in enumerate(zip(kept, receipt_logs, strict=True)):
        if (log.address, list(log.topics), log.data) != (
            theirs.address,
            list(theirs.topics),
            theirs.data,
        ):
            raise ValueError(
                f"transaction 0x{trace.hash.hex()}: log {i} of the call tracer differs from "
                "the receipt's"
            )
        log.index = theirs.index = i
        log.blockIndex = theirs.blockIndex
        theirs.ordinal = log.ordinal
