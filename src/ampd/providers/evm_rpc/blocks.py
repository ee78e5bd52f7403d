"""A block as the provider sent it, and the checks that it is whole before anyone uses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawBlock:
    """One block's raw JSON: `eth_getBlockByNumber(n, true)` and its receipts in tx order."""

    number: int
    block: dict[str, Any]
    receipts: list[dict[str, Any]]


def block_problem(number: int, block: Any) -> str | None:
    """Why an `eth_getBlockByNumber(number, true)` answer is unusable, or None if it is fine.

    A null answer is not judged here: whether it is a fault depends on the head.
    """
    if not isinstance(block, dict):
        return f"block {number}: expected a JSON object, got {type(block).__name__}"
    try:
        answered = int(block["number"], 16)
    except (KeyError, TypeError, ValueError):
        return f"block {number}: the answer has no valid 'number'"
    if answered != number:
        return f"block {number}: the answer is block {answered}"
    if not isinstance(block.get("hash"), str):
        return f"block {number}: the answer has no 'hash'"
    txs = block.get("transactions")
    if not isinstance(txs, list):
        return f"block {number}: 'transactions' is not a list of full transaction objects"
    for tx in txs:
        if type(tx) is not dict:
            return f"block {number}: 'transactions' is not a list of full transaction objects"
        if type(tx.get("hash")) is not str:
            return f"block {number}: a transaction has no 'hash'"
    return None


def match_receipts(block: dict[str, Any], receipts: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Put `receipts` in transaction order and check they are exactly the block's.

    Returns (ordered receipts, None) when they match, or ([], why not). A mismatch means
    the receipts came from another version of the block (a reorg between the two calls) or
    the provider is inconsistent: the whole block must be fetched again.
    """
    number = int(block["number"], 16)
    txs = block["transactions"]
    if receipts is None:
        return [], f"block {number}: no receipts returned"
    if not isinstance(receipts, list) or not all(isinstance(r, dict) for r in receipts):
        return [], f"block {number}: receipts are not a list of objects"
    if len(receipts) != len(txs):
        return [], f"block {number}: {len(receipts)} receipts for {len(txs)} transactions"
    # The common case, checked at C speed: in order, with the same text.
    block_hash = block["hash"]
    if [r.get("transactionHash") for r in receipts] == [tx["hash"] for tx in txs] and [
        r.get("blockHash") for r in receipts
    ].count(block_hash) == len(receipts):
        return receipts, None
    try:
        ordered = sorted(receipts, key=lambda r: int(r["transactionIndex"], 16))
    except (KeyError, TypeError, ValueError):
        return [], f"block {number}: a receipt has no valid 'transactionIndex'"
    block_hash = block["hash"].lower()
    for i, (tx, receipt) in enumerate(zip(txs, ordered, strict=True)):
        tx_hash = tx["hash"].lower()
        got = str(receipt.get("transactionHash", "")).lower()
        if got != tx_hash:
            return [], f"block {number}: receipt {i} is for transaction {got}, expected {tx_hash}"
        in_block = str(receipt.get("blockHash", "")).lower()
        if in_block != block_hash:
            return [], (
                f"block {number}: the receipt of transaction {tx_hash} is from block "
                f"{in_block}, not {block_hash}"
            )
    return ordered, None
