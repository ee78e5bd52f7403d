"""Build a short anvil chain that holds every kind of block and transaction extraction meets.

`build_varied_chain(anvil)` makes, on a fresh anvil (block 0 = genesis):

- a contract deployment (type 2, `to` null) of `LOG_CONTRACT`, hand-written EVM assembly:
  called with empty calldata it emits five logs, with 0, 1, 2, 3 and 4 topics (LOG0..LOG4);
  called with any calldata it REVERTs (a failed transaction: status 0, no logs);
- a block with several transactions: legacy (type 0) and access-list (type 1) transfers,
  an EIP-1559 (type 2) transfer, a type 2 call that logs, a reverted call;
- empty blocks;
- a blob (type 3) transaction and an EIP-7702 set-code (type 4) transaction, each in its own
  block, when the hardfork allows them (cancun+ for blobs, prague+ for set-code);
- a block mixing a legacy call that logs and a type 1 call with a non-empty access list.

Types 0, 1 and 2 are sent with `eth_sendTransaction` from anvil's unlocked dev accounts.
Types 3 and 4 need things `eth_sendTransaction` cannot make for us without a signing key
(a KZG sidecar; a signed authorization), so they are sent with anvil's companion `cast send`
(`--blob --path FILE`, and `--auth ADDRESS`, which signs the authorization itself), using the
dev accounts' well-known private keys and `--async` so they wait in the pool for manual mining.
Both work with anvil/cast 1.7.1 on the default (prague) hardfork. Building a blob's KZG
sidecar makes that `cast send` take a few seconds, so build the chain once per test module.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.anvil import DEV_ACCOUNTS, DEV_KEYS, Anvil, AnvilError, find_cast

# --- a tiny EVM assembler: opcodes by name, PUSH with an int or bytes, labels for jumps ---

_OPCODES = {
    "STOP": 0x00,
    "EQ": 0x14,
    "ISZERO": 0x15,
    "CALLER": 0x33,
    "CALLDATALOAD": 0x35,
    "CALLDATASIZE": 0x36,
    "CODECOPY": 0x39,
    "MSTORE": 0x52,
    "SLOAD": 0x54,
    "SSTORE": 0x55,
    "JUMPI": 0x57,
    "JUMPDEST": 0x5B,
    "DUP1": 0x80,
    "LOG0": 0xA0,
    "LOG1": 0xA1,
    "LOG2": 0xA2,
    "LOG3": 0xA3,
    "LOG4": 0xA4,
    "RETURN": 0xF3,
    "REVERT": 0xFD,
}


def assemble(program: list, opcodes: dict[str, int] | None = None) -> bytes:
    """Assemble ops: "NAME", ("PUSH", int | bytes), ("PUSH_LABEL", name), ("LABEL", name)
    (a JUMPDEST); NAME from `opcodes` (default: the ones this module's contracts use)."""
    opcodes = _OPCODES if opcodes is None else opcodes

    def size(op) -> int:
        if isinstance(op, str):
            return 1
        kind, arg = op
        if kind == "LABEL":
            return 1  # a JUMPDEST
        if kind == "PUSH_LABEL":
            return 3  # PUSH2: programs here are shorter than 64 KiB
        width = len(arg) if isinstance(arg, bytes) else max(1, (arg.bit_length() + 7) // 8)
        return 1 + width

    labels, offset = {}, 0
    for op in program:
        if not isinstance(op, str) and op[0] == "LABEL":
            labels[op[1]] = offset
        offset += size(op)
    code = bytearray()
    for op in program:
        if isinstance(op, str):
            code.append(opcodes[op])
            continue
        kind, arg = op
        if kind == "LABEL":
            code.append(0x5B)  # JUMPDEST
        elif kind == "PUSH_LABEL":
            code += bytes([0x61]) + labels[arg].to_bytes(2, "big")
        else:
            data = arg if isinstance(arg, bytes) else arg.to_bytes(size(op) - 1, "big")
            code.append(0x5F + len(data))  # PUSH1 is 0x60
            code += data
    return bytes(code)


LOG_DATA = bytes.fromhex("c0ffee" * 10 + "ee00")  # 32 bytes stored at memory[0:32]
LOG_TOPICS = [
    (0x01).to_bytes(32, "big"),  # mostly zero bytes: checks fixed-width topics keep them
    bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"),
    (2**256 - 1).to_bytes(32, "big"),
    bytes.fromhex("00" * 31 + "ff"),
]


def _log_program() -> list:
    program: list = [
        "CALLDATASIZE",
        ("PUSH_LABEL", "revert"),
        "JUMPI",
        ("PUSH", LOG_DATA),
        ("PUSH", 0),
        "MSTORE",
    ]
    for n in range(5):
        # LOGn pops offset, size, topic0..topic(n-1): push them in reverse.
        for topic in reversed(LOG_TOPICS[:n]):
            program.append(("PUSH", topic))
        program += [("PUSH", 32 - 4 * n), ("PUSH", 4 * n), f"LOG{n}"]
    program += ["STOP", ("LABEL", "revert"), ("PUSH", 0), ("PUSH", 0), "REVERT"]
    return program


LOG_RUNTIME = assemble(_log_program())

TRANSFER_TOPIC = bytes.fromhex("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef")
APPROVAL_TOPIC = bytes.fromhex("8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925")

# ERC-20's events without the token: calldata (kind, to, value), kind 0 emits
# Transfer(caller, to, value), any other kind Approval(caller, to, value).
TOKEN_EVENTS_RUNTIME = assemble(
    [
        ("PUSH", 64), "CALLDATALOAD", ("PUSH", 0), "MSTORE",  # the value is the data
        ("PUSH", 32), "CALLDATALOAD",  # topic2: to / spender
        "CALLER",  # topic1: from / owner
        ("PUSH", 0), "CALLDATALOAD", ("PUSH_LABEL", "approval"), "JUMPI",
        ("PUSH", TRANSFER_TOPIC), ("PUSH", 32), ("PUSH", 0), "LOG3", "STOP",
        ("LABEL", "approval"),
        ("PUSH", APPROVAL_TOPIC), ("PUSH", 32), ("PUSH", 0), "LOG3", "STOP",
    ]
)  # fmt: skip


def deploy_code(runtime: bytes) -> bytes:
    """Init code that copies `runtime` (appended after it) to memory and returns it."""

    def init(own_length: int) -> bytes:
        return assemble(
            [
                ("PUSH", len(runtime).to_bytes(2, "big")),
                "DUP1",
                ("PUSH", own_length),  # where the runtime starts in this code
                ("PUSH", 0),
                "CODECOPY",
                ("PUSH", 0),
                "RETURN",
            ]
        )

    return init(len(init(0))) + runtime


LOG_CONTRACT = deploy_code(LOG_RUNTIME)


# --- the chain ---


@dataclass(frozen=True)
class TxInfo:
    hash: str
    type: int
    block: int
    kind: str  # transfer | deploy | logs | revert | blob | setcode


@dataclass
class ChainInfo:
    """What `build_varied_chain` made: the block range and which transaction is where."""

    start: int
    end: int
    contract: str
    hardfork: str
    txs: list[TxInfo] = field(default_factory=list)
    empty_blocks: list[int] = field(default_factory=list)
    multi_tx_block: int = 0

    @property
    def numbers(self) -> list[int]:
        return list(range(self.start, self.end + 1))

    def by_kind(self, kind: str) -> list[TxInfo]:
        return [t for t in self.txs if t.kind == kind]

    def by_type(self, tx_type: int) -> list[TxInfo]:
        return [t for t in self.txs if t.type == tx_type]

    def blocks_with_txs(self) -> list[int]:
        return sorted({t.block for t in self.txs})


GWEI = 10**9
_ALICE, _BOB, _CAROL, _DAVE, _ERIN = DEV_ACCOUNTS[:5]
_STORAGE_KEYS = ["0x" + "00" * 31 + "01", "0x" + "ab" * 32]


def build_varied_chain(anvil: Anvil, hardfork: str | None = None) -> ChainInfo:
    """Make the chain described in the module docstring on `anvil`; return where things are.

    `hardfork` defaults to anvil's own setting (prague when not given); blob transactions
    need cancun or later and set-code transactions prague or later.
    """
    hardfork = (hardfork or anvil.hardfork or "prague").lower()
    start = anvil.block_number() + 1
    txs: list[TxInfo] = []

    def mined(hashes: list[tuple[str, int, str]]) -> None:
        for tx_hash, tx_type, kind in hashes:
            receipt = wait_for_receipt(anvil, tx_hash)
            if receipt is None:
                raise AnvilError(f"transaction {tx_hash} ({kind}) was not mined")
            if int(receipt["type"], 16) != tx_type:
                raise AnvilError(f"{kind} transaction came out as type {receipt['type']}")
            txs.append(TxInfo(tx_hash, tx_type, int(receipt["blockNumber"], 16), kind))

    # 1: the contract, alone in its block (automine).
    deploy = anvil.send(
        {
            "from": _ALICE,
            "data": "0x" + LOG_CONTRACT.hex(),
            "maxFeePerGas": hex(20 * GWEI),
            "maxPriorityFeePerGas": hex(GWEI),
        }
    )
    mined([(deploy, 2, "deploy")])
    contract = anvil.receipt(deploy)["contractAddress"]

    anvil.set_automine(False)
    try:
        # 2: several transactions of types 0, 1 and 2 in one block, one of them reverted.
        # One sender each: anvil 1.7.1 drops a sender's second pending transaction when its
        # fee is higher than the first's.
        batch = [
            (
                anvil.send(
                    {"from": _ALICE, "to": _BOB, "value": hex(10**18), "gasPrice": hex(3 * GWEI)}
                ),
                0,
                "transfer",
            ),
            (
                anvil.send(
                    {
                        "from": _BOB,
                        "to": _CAROL,
                        "value": hex(12345),
                        "type": "0x1",
                        "gasPrice": hex(3 * GWEI),
                        "accessList": [{"address": contract, "storageKeys": _STORAGE_KEYS}],
                    }
                ),
                1,
                "transfer",
            ),
            (
                anvil.send(
                    {
                        "from": _CAROL,
                        "to": _ALICE,
                        "value": "0x0",
                        "maxFeePerGas": hex(30 * GWEI),
                        "maxPriorityFeePerGas": hex(2 * GWEI),
                    }
                ),
                2,
                "transfer",
            ),
            (_call(anvil, _DAVE, contract, data="0x"), 2, "logs"),
            (_call(anvil, _ERIN, contract, data="0xdeadbeef"), 2, "revert"),
        ]
        anvil.rpc("evm_mine")
        mined(batch)
        multi_tx_block = anvil.block_number()

        # 3, 4: empty blocks.
        anvil.rpc("evm_mine")
        anvil.rpc("evm_mine")
        empty_blocks = [multi_tx_block + 1, multi_tx_block + 2]

        if hardfork not in _PRE_CANCUN:
            # Explicit fees and gas: estimating them makes cast build the sidecar twice.
            fees = ["--gas-limit", "21000", "--gas-price", str(30 * GWEI)]
            fees += ["--priority-gas-price", str(GWEI), "--blob-gas-price", "1000"]
            blob = _cast_send(
                anvil, DEV_KEYS[2], [*fees, "--blob", "--eip4844", "--path"], _BOB, blob=True
            )
            anvil.rpc("evm_mine")
            mined([(blob, 3, "blob")])
        if hardfork not in _PRE_PRAGUE:
            setcode = _cast_send(anvil, DEV_KEYS[3], ["--auth", contract], _BOB)
            anvil.rpc("evm_mine")
            mined([(setcode, 4, "setcode")])

        # A legacy call that logs and a type 1 call with an access list, together.
        mixed = [
            (_call(anvil, _BOB, contract, data="0x", legacy=True), 0, "logs"),
            (
                anvil.send(
                    {
                        "from": _CAROL,
                        "to": contract,
                        "type": "0x1",
                        "gasPrice": hex(4 * GWEI),
                        "gas": hex(200_000),
                        "accessList": [
                            {"address": contract, "storageKeys": _STORAGE_KEYS},
                            {"address": _ALICE, "storageKeys": []},
                        ],
                    }
                ),
                1,
                "logs",
            ),
        ]
        anvil.rpc("evm_mine")
        mined(mixed)
        anvil.rpc("evm_mine")  # and a last empty block
        end = anvil.block_number()
        empty_blocks.append(end)
    finally:
        anvil.set_automine(True)

    return ChainInfo(
        start=start,
        end=end,
        contract=contract,
        hardfork=hardfork,
        txs=txs,
        empty_blocks=empty_blocks,
        multi_tx_block=multi_tx_block,
    )


_PRE_CANCUN = {
    "frontier",
    "homestead",
    "tangerine",
    "spuriousdragon",
    "byzantium",
    "constantinople",
    "petersburg",
    "istanbul",
    "muirglacier",
    "berlin",
    "london",
    "arrowglacier",
    "grayglacier",
    "paris",
    "merge",
    "shanghai",
}
_PRE_PRAGUE = _PRE_CANCUN | {"cancun"}


def wait_for_receipt(anvil: Anvil, tx_hash: str, timeout: float = 10.0) -> dict | None:
    # anvil may answer eth_sendTransaction (automine) a moment before the block is stored.
    deadline = time.monotonic() + timeout
    while (receipt := anvil.receipt(tx_hash)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return receipt


def _call(anvil: Anvil, sender: str, to: str, data: str, legacy: bool = False) -> str:
    # An explicit gas limit: without it, estimating a reverting call fails before sending.
    tx = {"from": sender, "to": to, "data": data, "gas": hex(200_000)}
    if legacy:
        tx["gasPrice"] = hex(3 * GWEI)
    else:
        tx |= {"maxFeePerGas": hex(30 * GWEI), "maxPriorityFeePerGas": hex(GWEI)}
    return anvil.send(tx)


def _cast_send(anvil: Anvil, key: str, args: list[str], to: str, blob: bool = False) -> str:
    cast = find_cast()
    if cast is None:
        raise AnvilError("cast not found; run `make setup` to install it")
    with tempfile.TemporaryDirectory() as tmp:
        if blob:
            path = Path(tmp) / "blob.bin"
            path.write_bytes(b"ampd blob payload " * 64)
            args = [*args, str(path)]
        cmd = [cast, "send", "--async", "--rpc-url", anvil.url, "--private-key", key, *args, to]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AnvilError(f"cast send {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]
