"""The benchmark chain: a hand-assembled log-emitting contract and blocks full of calls to it.

Every block gets the same content: `calls` calls to the contract (each emits three logs:
LOG1, LOG2 and LOG3, with 32 or 64 bytes of data) and `transfers` plain ETH transfers, half
of them legacy (type 0) and half EIP-1559 (type 2), each from its own sender so the nonces
are known without asking. Mining is manual (`--no-mining`): one JSON-RPC batch sends a
block's transactions and `evm_mine` seals them.

The senders are impersonated (`anvil_impersonateAccount`), so their transactions carry a zero
signature (r = s = 0). That is deliberate: anvil recovers the sender of every signed
transaction each time it serves a full block (~0.3 ms per transaction), which would make
the node, not the client, the thing measured; a real node stores senders. Impersonation
also makes building 4x cheaper. The contract is deployed by a dev account, signed.

A built chain is cached in bench/work/ with anvil's `--dump-state` and reloaded with
`--load-state` on later runs (pruned history keeps the blocks and receipts across it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from anvil import Anvil, AnvilError

# Layout version of the chain content: bump it when the contract or the block plan changes,
# so cached state files of the old layout are not reused.
CHAIN_LAYOUT = 2


def _topic(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def _push32(value: bytes) -> bytes:
    assert len(value) == 32
    return b"\x7f" + value


# Runtime code, by hand (no solc here). On any call:
#   mem[0:32] = NUMBER; mem[32:64] = GAS
#   LOG1(mem[0:32],  T0)
#   LOG2(mem[0:32],  T1, CALLER)
#   LOG3(mem[0:64],  T2, CALLER, NUMBER)
#   STOP
# Stack order: the LOGn opcodes pop offset, size, topic0..; so topics are pushed last-first.
RUNTIME = b"".join(
    [
        b"\x43\x60\x00\x52",  # NUMBER PUSH1 0 MSTORE
        b"\x5a\x60\x20\x52",  # GAS PUSH1 32 MSTORE
        _push32(_topic("Ping(uint256)")),
        b"\x60\x20\x60\x00\xa1",  # PUSH1 32 PUSH1 0 LOG1
        b"\x33",  # CALLER
        _push32(_topic("Pong(address,uint256)")),
        b"\x60\x20\x60\x00\xa2",  # PUSH1 32 PUSH1 0 LOG2
        b"\x43\x33",  # NUMBER CALLER
        _push32(_topic("Tick(address,uint256,uint256,uint256)")),
        b"\x60\x40\x60\x00\xa3",  # PUSH1 64 PUSH1 0 LOG3
        b"\x00",  # STOP
    ]
)
LOGS_PER_CALL = 3

# Init code: copy the runtime that follows these 11 bytes into memory and return it.
_INIT = bytes([0x60, len(RUNTIME), 0x80, 0x60, 0x0B, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3])
assert len(_INIT) == 0x0B and len(RUNTIME) < 256
DEPLOY_CODE = "0x" + (_INIT + RUNTIME).hex()

_GWEI = 10**9
_CALL_GAS = 60_000
_TRANSFER_GAS = 21_000


@dataclass(frozen=True)
class ChainPlan:
    """What a chain holds: `blocks` blocks after genesis, each with the same content."""

    blocks: int
    calls: int = 4
    transfers: int = 2
    layout: int = CHAIN_LAYOUT

    @property
    def senders(self) -> int:
        return self.calls + self.transfers

    @property
    def txs_per_block(self) -> int:
        return self.calls + self.transfers

    @property
    def logs_per_block(self) -> int:
        return self.calls * LOGS_PER_CALL

    def key(self) -> str:
        return f"chain-{self.blocks}b-{self.calls}c-{self.transfers}t-v{self.layout}"


@dataclass(frozen=True)
class Chain:
    """A built chain: the blocks 1..head hold the plan's content (block 0 is genesis, block 1
    the contract deployment with no logs, so the benchmark range starts at `first`)."""

    plan: ChainPlan
    first: int
    last: int
    contract: str
    build_seconds: float
    loaded_from_cache: bool

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1

    def expected_rows(self) -> dict[str, int]:
        """Rows per table over [first, last]."""
        return {
            "blocks": self.blocks,
            "transactions": self.blocks * self.plan.txs_per_block,
            "logs": self.blocks * self.plan.logs_per_block,
        }

    def to_json(self) -> dict:
        return {
            "plan": asdict(self.plan),
            "first": self.first,
            "last": self.last,
            "contract": self.contract,
            "build_seconds": round(self.build_seconds, 2),
            "loaded_from_cache": self.loaded_from_cache,
            "expected_rows": self.expected_rows(),
        }


def _senders(plan: ChainPlan) -> list[str]:
    """Addresses that look like real ones (not 0x00..01), one per transaction of a block."""
    return [
        "0x" + hashlib.sha256(f"bench-sender-{i}".encode()).hexdigest()[:40]
        for i in range(plan.senders)
    ]


def _block_txs(plan: ChainPlan, senders: list[str], contract: str, nonce: int) -> list[dict]:
    txs = []
    for i in range(plan.calls):
        txs.append(
            {
                "from": senders[i],
                "to": contract,
                "gas": hex(_CALL_GAS),
                "maxFeePerGas": hex(50 * _GWEI),
                "maxPriorityFeePerGas": hex(1 * _GWEI),
                "nonce": hex(nonce),
                # Calldata makes `input` non-trivial; the contract ignores it.
                "data": "0x" + (nonce.to_bytes(4, "big") * 9).hex(),
            }
        )
    for j in range(plan.transfers):
        sender = senders[plan.calls + j]
        recipient = "0x" + hashlib.sha256(f"recipient-{j}-{nonce % 97}".encode()).hexdigest()[:40]
        tx = {
            "from": sender,
            "to": recipient,
            "gas": hex(_TRANSFER_GAS),
            "value": hex(10**12 + nonce),
            "nonce": hex(nonce),
        }
        if j % 2 == 0:
            tx["gasPrice"] = hex(50 * _GWEI)  # legacy (type 0)
        else:
            tx["maxFeePerGas"] = hex(50 * _GWEI)
            tx["maxPriorityFeePerGas"] = hex(1 * _GWEI)
        txs.append(tx)
    return txs


def fill(
    anvil: Anvil,
    plan: ChainPlan,
    progress: Callable[[int, int], None] | None = None,
    every: int = 5000,
) -> Chain:
    """Mine the plan's blocks into a fresh (no-mining) anvil; returns the built chain.
    `progress(done, total)` is called every `every` blocks."""
    started = time.monotonic()
    deployer = anvil.call("eth_accounts")[0]
    senders = _senders(plan)
    anvil.batch(
        [("anvil_setBalance", [s, hex(10**24)]) for s in senders]
        + [("anvil_impersonateAccount", [s]) for s in senders]
    )
    deploy_hash = anvil.call(
        "eth_sendTransaction", {"from": deployer, "data": DEPLOY_CODE, "gas": hex(200_000)}
    )
    anvil.call("evm_mine")
    receipt = anvil.call("eth_getTransactionReceipt", deploy_hash)
    if receipt is None or receipt["status"] != "0x1" or not receipt.get("contractAddress"):
        raise AnvilError(f"contract deployment failed: {receipt}")
    contract = receipt["contractAddress"]
    code = anvil.call("eth_getCode", contract, "latest")
    if code != "0x" + RUNTIME.hex():
        raise AnvilError(f"deployed code differs from the hand-assembled runtime: {code}")
    first = int(anvil.call("eth_blockNumber"), 16) + 1

    for n in range(plan.blocks):
        txs = _block_txs(plan, senders, contract, n)
        # anvil runs a batch's calls in order, so one round trip fills and seals a block
        # (`verify` checks that each sampled block got exactly its own transactions).
        anvil.batch([("eth_sendTransaction", [tx]) for tx in txs] + [("evm_mine", [])])
        if progress is not None and (n + 1) % every == 0:
            progress(n + 1, plan.blocks)
    last = int(anvil.call("eth_blockNumber"), 16)
    chain = Chain(plan, first, last, contract, time.monotonic() - started, False)
    verify(anvil, chain)
    return chain


def mine_more(anvil: Anvil, chain: Chain, count: int, pause: float = 0.0) -> Iterator[int]:
    """Mine `count` more blocks of the plan's content on top of the chain's node (it may have
    been reloaded from the cache: the senders are impersonated again), `pause` seconds
    apart; yields each block's number once it is mined."""
    senders = _senders(chain.plan)
    anvil.batch([("anvil_impersonateAccount", [s]) for s in senders])
    nonce = int(anvil.call("eth_getTransactionCount", senders[0], "latest"), 16)
    for k in range(count):
        if k and pause:
            time.sleep(pause)
        txs = _block_txs(chain.plan, senders, chain.contract, nonce + k)
        anvil.batch([("eth_sendTransaction", [tx]) for tx in txs] + [("evm_mine", [])])
        yield int(anvil.call("eth_blockNumber"), 16)


def verify(anvil: Anvil, chain: Chain, samples: int = 5) -> None:
    """Check the head and a few blocks spread over the range hold the plan's content."""
    head = int(anvil.call("eth_blockNumber"), 16)
    if head != chain.last:
        raise AnvilError(f"chain head is {head}, expected {chain.last}")
    step = max(1, (chain.last - chain.first) // max(1, samples - 1))
    for n in sorted({*range(chain.first, chain.last + 1, step), chain.last}):
        block, receipts = anvil.batch(
            [("eth_getBlockByNumber", [hex(n), False]), ("eth_getBlockReceipts", [hex(n)])]
        )
        if block is None or receipts is None:
            raise AnvilError(f"block {n} is not queryable (block or receipts missing)")
        txs = len(block["transactions"])
        logs = sum(len(r["logs"]) for r in receipts)
        ok = all(r["status"] == "0x1" for r in receipts)
        if (txs, logs, ok) != (chain.plan.txs_per_block, chain.plan.logs_per_block, True):
            raise AnvilError(
                f"block {n} has {txs} txs and {logs} logs (all ok: {ok}), expected "
                f"{chain.plan.txs_per_block} and {chain.plan.logs_per_block}"
            )


def cache_paths(work_dir: Path, plan: ChainPlan) -> tuple[Path, Path]:
    """The state file and its metadata for `plan`."""
    base = work_dir / "chains" / plan.key()
    return base.with_suffix(".state.json"), base.with_suffix(".meta.json")


def write_meta(meta_path: Path, chain: Chain) -> None:
    meta_path.write_text(json.dumps(chain.to_json(), indent=2))


def read_meta(meta_path: Path, plan: ChainPlan) -> Chain | None:
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("plan") != asdict(plan):
        return None
    return Chain(plan, data["first"], data["last"], data["contract"], data["build_seconds"], True)
