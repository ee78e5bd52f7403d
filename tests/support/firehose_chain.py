"""Contracts and a short anvil chain with call trees deep enough to test Firehose call traces.

Two hand-assembled contracts (see `support.chain` for the simpler ones):

- `RELAY_RUNTIME` reads calldata `target (32 bytes) | mode (32 bytes) | inner calldata`. It
  logs `BEFORE_TOPIC` (data: the mode word), then, when `target` is not zero, calls it with
  the inner calldata (CALL forwarding its own CALLVALUE, or DELEGATECALL with mode bit 2, or
  STATICCALL with mode bit 4), logs `AFTER_TOPIC` (data: the call's success flag) and returns
  that word; mode bit 1 makes it REVERT with that word instead, mode bit 8 makes it hit the
  INVALID opcode right after the first log (a failure that is not a revert). Nesting relays
  in the inner calldata builds call trees of any depth, with logs before and after each child.
- `FACTORY_RUNTIME` takes init code as calldata, runs it once with CREATE and once with
  CREATE2 (salt `FACTORY_SALT`) and logs LOG3(CREATED_TOPIC, CREATE2's address, CREATE's
  address), no data.

`build_call_chain(anvil)` deploys them and mines blocks holding every case a Firehose call
tree has: a reverted transaction whose calls logged (logs of state-reverted calls), a
successful transaction with a reverted nested call (its child is state-reverted although it
succeeded), a failed (not reverted) nested call, logs at depths 0, 1 and 2, DELEGATECALL,
STATICCALL to a precompile, CREATE and CREATE2 from a contract (constructors that log), a
contract-creation transaction, plain value transfers (to an EOA and to a relay with value)
and an empty block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from support.anvil import DEV_ACCOUNTS, Anvil, AnvilError
from support.chain import GWEI, wait_for_receipt
from support.chain import assemble as assemble_with

_OPCODES = {
    "STOP": 0x00,
    "SUB": 0x03,
    "AND": 0x16,
    "ISZERO": 0x15,
    "CALLVALUE": 0x34,
    "CALLDATALOAD": 0x35,
    "CALLDATASIZE": 0x36,
    "CALLDATACOPY": 0x37,
    "CODECOPY": 0x39,
    "MSTORE": 0x52,
    "JUMP": 0x56,
    "JUMPI": 0x57,
    "GAS": 0x5A,
    "LOG0": 0xA0,
    "LOG1": 0xA1,
    "LOG2": 0xA2,
    "LOG3": 0xA3,
    "CREATE": 0xF0,
    "CALL": 0xF1,
    "RETURN": 0xF3,
    "DELEGATECALL": 0xF4,
    "CREATE2": 0xF5,
    "STATICCALL": 0xFA,
    "REVERT": 0xFD,
    "INVALID": 0xFE,
}


def assemble(program: list) -> bytes:
    """Ops: "NAME", ("PUSH", int | bytes), ("PUSH_LABEL", name), ("LABEL", name) (a JUMPDEST)."""
    return assemble_with(program, _OPCODES)


def init_code(runtime: bytes, prelude: list | None = None) -> bytes:
    """Init code running `prelude` (ops), then returning `runtime`, which is appended to it."""

    def init(own_length: int) -> bytes:
        copy = [("PUSH", len(runtime).to_bytes(2, "big")), ("PUSH", own_length.to_bytes(2, "big"))]
        copy += [("PUSH", 0), "CODECOPY", ("PUSH", len(runtime).to_bytes(2, "big")), ("PUSH", 0)]
        return assemble([*(prelude or []), *copy, "RETURN"])

    return init(len(init(0))) + runtime


BEFORE_TOPIC = bytes.fromhex("be" * 32)
AFTER_TOPIC = bytes.fromhex("af" * 32)
CTOR_TOPIC = bytes.fromhex("c7" * 32)
CREATED_TOPIC = bytes.fromhex("ce" * 32)
FACTORY_SALT = (0x5A17).to_bytes(32, "big")
MODE_REVERT, MODE_DELEGATE, MODE_STATIC, MODE_INVALID = 1, 2, 4, 8
IDENTITY_PRECOMPILE = "0x" + "00" * 19 + "04"

_INNER = 96  # where the relay copies its child's calldata in memory


def _log(topic: bytes) -> list:
    return [("PUSH", topic), ("PUSH", 32), ("PUSH", 0), "LOG1"]  # LOG1(mem[0:32], topic)


def _call(opcode: str) -> list:
    args = [("PUSH", 32), ("PUSH", 32), ("PUSH", 64), "CALLDATASIZE", "SUB", ("PUSH", _INNER)]
    value = ["CALLVALUE"] if opcode == "CALL" else []
    return [*args, *value, ("PUSH", 0), "CALLDATALOAD", "GAS", opcode]


RELAY_RUNTIME = assemble(
    [
        ("PUSH", 32), "CALLDATALOAD", ("PUSH", 0), "MSTORE", *_log(BEFORE_TOPIC),
        ("PUSH", 32), "CALLDATALOAD", ("PUSH", MODE_INVALID), "AND", ("PUSH_LABEL", "bad"), "JUMPI",
        ("PUSH", 0), "CALLDATALOAD", "ISZERO", ("PUSH_LABEL", "done"), "JUMPI",
        ("PUSH", 64), "CALLDATASIZE", "SUB", ("PUSH", 64), ("PUSH", _INNER), "CALLDATACOPY",
        ("PUSH", 32), "CALLDATALOAD", ("PUSH", MODE_DELEGATE), "AND", ("PUSH_LABEL", "dcall"), "JUMPI",
        ("PUSH", 32), "CALLDATALOAD", ("PUSH", MODE_STATIC), "AND", ("PUSH_LABEL", "scall"), "JUMPI",
        *_call("CALL"), ("PUSH_LABEL", "after"), "JUMP",
        ("LABEL", "dcall"), *_call("DELEGATECALL"), ("PUSH_LABEL", "after"), "JUMP",
        ("LABEL", "scall"), *_call("STATICCALL"),
        ("LABEL", "after"), ("PUSH", 0), "MSTORE", *_log(AFTER_TOPIC),
        ("LABEL", "done"),
        ("PUSH", 32), "CALLDATALOAD", ("PUSH", MODE_REVERT), "AND", ("PUSH_LABEL", "revert"), "JUMPI",
        ("PUSH", 32), ("PUSH", 0), "RETURN",
        ("LABEL", "revert"), ("PUSH", 32), ("PUSH", 0), "REVERT",
        ("LABEL", "bad"), "INVALID",
    ]
)  # fmt: skip

FACTORY_RUNTIME = assemble(
    [
        "CALLDATASIZE", ("PUSH", 0), ("PUSH", 0), "CALLDATACOPY",
        "CALLDATASIZE", ("PUSH", 0), ("PUSH", 0), "CREATE",
        ("PUSH", FACTORY_SALT), "CALLDATASIZE", ("PUSH", 0), ("PUSH", 0), "CREATE2",
        ("PUSH", CREATED_TOPIC), ("PUSH", 0), ("PUSH", 0), "LOG3", "STOP",
    ]
)  # fmt: skip

# A relay whose constructor logs CTOR_TOPIC (data: 32 zero bytes).
LOGGING_RELAY_INIT = init_code(RELAY_RUNTIME, _log(CTOR_TOPIC))


def relay_input(target: str | None, mode: int = 0, inner: bytes = b"") -> bytes:
    """Calldata for a relay: call `target` (None: no call) with `inner`, behaving as `mode`."""
    address = bytes.fromhex(target[2:]) if target else b""
    return address.rjust(32, b"\0") + mode.to_bytes(32, "big") + inner


@dataclass
class CallChain:
    """Where `build_call_chain` put things: block numbers by case, contracts, tx hashes."""

    relays: list[str]
    factory: str
    blocks: dict[str, int] = field(default_factory=dict)
    txs: dict[str, str] = field(default_factory=dict)

    @property
    def start(self) -> int:
        return min(self.blocks.values())

    @property
    def end(self) -> int:
        return max(self.blocks.values())


_GAS = hex(3_000_000)
_FEES = {"maxFeePerGas": hex(50 * GWEI), "maxPriorityFeePerGas": hex(GWEI)}


def build_call_chain(anvil: Anvil) -> CallChain:
    """Deploy two relays and a factory, then mine the cases of the module docstring."""
    alice, bob, carol, dave = DEV_ACCOUNTS[:4]

    def deploy(code: bytes) -> tuple[str, str, int]:
        tx = anvil.send({"from": alice, "data": "0x" + code.hex(), "gas": _GAS, **_FEES})
        receipt = _mined(anvil, tx)
        return receipt["contractAddress"], tx, int(receipt["blockNumber"], 16)

    relay_a, deploy_tx, deploy_block = deploy(LOGGING_RELAY_INIT)
    relay_b, _, _ = deploy(init_code(RELAY_RUNTIME))
    factory, _, _ = deploy(init_code(FACTORY_RUNTIME))
    chain = CallChain(relays=[relay_a, relay_b], factory=factory)
    chain.blocks["deploy"], chain.txs["deploy"] = deploy_block, deploy_tx

    def send(tx: dict) -> str:
        return anvil.send({"gas": _GAS, **_FEES, **tx})

    # a: depth 0 logs around b (depth 1), which logs around a leaf call to a (depth 2).
    nested = relay_input(relay_b, 0, relay_input(relay_a, 0, relay_input(None)))
    # The same shape, but b reverts after its leaf call: b and the leaf are state-reverted.
    inner_revert = relay_input(relay_b, 0, relay_input(relay_a, MODE_REVERT, relay_input(None)))
    # b hits INVALID: failed, not reverted.
    inner_invalid = relay_input(relay_b, 0, relay_input(None, MODE_INVALID))
    # The top call itself reverts after nested calls that logged.
    reverted = relay_input(relay_b, MODE_REVERT, relay_input(relay_a, 0, relay_input(None)))
    # DELEGATECALL into b (which then STATICCALLs the identity precompile).
    delegate = relay_input(relay_b, MODE_DELEGATE, relay_input(IDENTITY_PRECOMPILE, MODE_STATIC))

    anvil.set_automine(False)
    try:
        calls = {
            "nested": send({"from": bob, "to": relay_a, "data": "0x" + nested.hex()}),
            "inner_revert": send({"from": carol, "to": relay_a, "data": "0x" + inner_revert.hex()}),
            "reverted": send({"from": dave, "to": relay_a, "data": "0x" + reverted.hex()}),
        }
        anvil.rpc("evm_mine")
        _record(anvil, chain, calls)

        more = {
            "inner_invalid": send({"from": bob, "to": relay_a, "data": "0x" + inner_invalid.hex()}),
            "delegate": send({"from": carol, "to": relay_a, "data": "0x" + delegate.hex()}),
            "create": send({"from": dave, "to": factory, "data": "0x" + LOGGING_RELAY_INIT.hex()}),
        }
        anvil.rpc("evm_mine")
        _record(anvil, chain, more)

        value = relay_input(relay_b, 0, relay_input(None))
        transfers = {
            "transfer": send({"from": alice, "to": dave, "value": hex(10**17)}),
            "value_call": send(
                {"from": bob, "to": relay_a, "value": hex(12345), "data": "0x" + value.hex()}
            ),
        }
        anvil.rpc("evm_mine")
        _record(anvil, chain, transfers)

        anvil.rpc("evm_mine")
        chain.blocks["empty"] = anvil.block_number()
    finally:
        anvil.set_automine(True)
    return chain


def _mined(anvil: Anvil, tx_hash: str) -> dict:
    receipt = wait_for_receipt(anvil, tx_hash)
    if receipt is None:
        raise AnvilError(f"transaction {tx_hash} was not mined")
    return receipt


def _record(anvil: Anvil, chain: CallChain, txs: dict[str, str]) -> None:
    for name, tx_hash in txs.items():
        chain.txs[name] = tx_hash
        chain.blocks[name] = int(_mined(anvil, tx_hash)["blockNumber"], 16)
