"""Regenerates the JSON samples in this folder from a real anvil (run by hand, not by the tests).

    .venv/bin/python tests/data/evm/capture.py

Starts anvil (prague, so type 3 and type 4 transactions are accepted), mines one block with a
legacy, an EIP-2930 and an EIP-1559 contract creation, then one block with calls that emit logs
with 0-4 topics, a reverted call, a blob transaction and an EIP-7702 transaction, and writes
`[block, receipts]` pairs for blocks 0..2 to `anvil_blocks.json`.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
BIN = ROOT / ".tools/node_modules/@foundry-rs"
ANVIL = BIN / "anvil-linux-amd64/bin/anvil"
CAST = BIN / "cast-linux-amd64/bin/cast"
PORT = 18645
URL = f"http://127.0.0.1:{PORT}"

# anvil's first three dev accounts (well-known test keys).
ACCOUNTS = [
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
]
KEY_1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
KEY_2 = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"

# Runtime: with calldata, REVERT; without, LOG0..LOG4 of one 32-byte word (42) and STOP.
RUNTIME = (
    "36603757"  # CALLDATASIZE PUSH1 0x37 JUMPI
    "602a600052"  # mstore(0, 42)
    "60206000a0"  # LOG0
    "600160206000a1"  # LOG1
    "6002600160206000a2"  # LOG2
    "60036002600160206000a3"  # LOG3
    "600460036002600160206000a4"  # LOG4
    "00"  # STOP
    "5b60006000fd"  # JUMPDEST REVERT(0, 0)
)
_N = len(RUNTIME) // 2
INIT = f"60{_N:02x}600c60003960{_N:02x}6000f3" + RUNTIME


def rpc(method, *params):
    r = httpx.post(URL, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    body = r.json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


def send(sender, **fields):
    return rpc("eth_sendTransaction", {"from": sender, **fields})


def cast(*args):
    out = subprocess.run([str(CAST), *args, "--rpc-url", URL], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cast {args}: {out.stderr}")
    return out.stdout.strip()


def main() -> int:
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(PORT), "--hardfork", "prague", "--no-mining"],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                rpc("eth_chainId")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        a0, a1, a2 = ACCOUNTS
        gwei = 10**9
        fee_1559 = {"maxFeePerGas": hex(5 * gwei), "maxPriorityFeePerGas": hex(gwei), "type": "0x2"}
        # Block 1: legacy transfer, EIP-2930 with an access list, EIP-1559 contract creation.
        keys = ["0x" + "00" * 31 + "01", "0x" + "00" * 31 + "02"]
        send(a0, to=a1, value=hex(10**18), gasPrice=hex(3 * gwei), type="0x0")
        send(a1, to=a2, value="0x1", gasPrice=hex(3 * gwei), type="0x1",
             accessList=[{"address": a2, "storageKeys": keys}])  # fmt: skip
        send(a2, data="0x" + INIT, **fee_1559)
        rpc("evm_mine")
        receipts = rpc("eth_getBlockReceipts", "0x1")
        contract = next(r["contractAddress"] for r in receipts if r["contractAddress"])
        # Block 2: logs with 0..4 topics, a reverted call, an EIP-2930 tx without entries,
        # a blob tx and an EIP-7702 tx.
        send(a0, to=contract, **fee_1559)
        send(a0, to=contract, data="0x01", gas=hex(100_000), **fee_1559)
        send(a0, to=a1, value="0x2", gasPrice=hex(3 * gwei), type="0x1", accessList=[])
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as blob:
            blob.write("ampd blob sample")
        cast("send", "--async", "--private-key", KEY_1,
             "--blob", "--eip4844", "--path", blob.name, a2)  # fmt: skip
        os.unlink(blob.name)
        cast("send", "--async", "--gas-limit", "200000", "--gas-price", "5gwei",
             "--priority-gas-price", "1gwei", "--private-key", KEY_2, "--auth", contract, a2)  # fmt: skip
        rpc("evm_mine")
        pairs = []
        for n in range(3):
            block = rpc("eth_getBlockByNumber", hex(n), True)
            for tx in block["transactions"]:
                # anvil echoes the blob sidecar (128 KiB a blob); nodes don't, and we don't store it.
                for key in ("blobs", "commitments", "proofs"):
                    tx.pop(key, None)
            receipts = rpc("eth_getBlockReceipts", hex(n))
            pairs.append([block, receipts])
        (HERE / "anvil_blocks.json").write_text(json.dumps(pairs, indent=1) + "\n")
        print("block 1 types:", [t["type"] for t in pairs[1][0]["transactions"]])
        print("block 2 types:", [t["type"] for t in pairs[2][0]["transactions"]])
    finally:
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
