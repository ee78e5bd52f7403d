"""A derived manifest over an evm-rpc dataset for the tests, and the rows it must give."""

from __future__ import annotations

from typing import Any

from support.anvil import Anvil


def field(name: str, type_: object, nullable: bool = False) -> dict[str, Any]:
    return {"name": name, "type": type_, "nullable": nullable}


def even_logs_manifest(dependency: str) -> dict[str, Any]:
    """`even_logs`: the logs of even log index (block, tx hash, index, address); `tagged`:
    a JavaScript function over them; `late`: one row per block of `even_logs`."""
    return {
        "kind": "manifest",
        "dependencies": {"eth": dependency},
        "tables": {
            "even_logs": {
                "input": {
                    "sql": "SELECT block_num, tx_hash, log_index, address FROM eth.logs "
                    "WHERE log_index % 2 = 0"
                },
                "schema": {
                    "arrow": {
                        "fields": [
                            field("_block_num", "UInt64"),
                            field("block_num", "UInt64"),
                            field("tx_hash", {"FixedSizeBinary": 32}),
                            field("log_index", "UInt32"),
                            field("address", {"FixedSizeBinary": 20}),
                        ]
                    }
                },
            },
            "tagged": {
                "input": {"sql": "SELECT self.tag(log_index) AS t FROM self.even_logs"},
                "schema": {
                    "arrow": {"fields": [field("_block_num", "UInt64"), field("t", "Utf8", True)]}
                },
            },
            "late": {
                "input": {"sql": "SELECT DISTINCT ON (_block_num) tx_hash FROM self.even_logs"},
                "schema": {
                    "arrow": {
                        "fields": [
                            field("_block_num", "UInt64"),
                            field("tx_hash", {"FixedSizeBinary": 32}),
                        ]
                    }
                },
            },
        },
        "functions": {
            "tag": {
                "inputTypes": ["UInt32"],
                "outputType": "Utf8",
                "source": {"source": 'function tag(i) { return "log-" + i }', "filename": "t.js"},
            }
        },
    }


def node_even_logs(anvil: Anvil, first: int, last: int) -> list[tuple]:
    """(block, tx hash, log index, address) of the node's logs of even index, in order."""
    out = []
    for n in range(first, last + 1):
        for receipt in anvil.block_receipts(n) or []:
            for log in receipt["logs"]:
                index = int(log["logIndex"], 16)
                if index % 2 == 0:
                    tx, address = log["transactionHash"], log["address"]
                    out.append((n, bytes.fromhex(tx[2:]), index, bytes.fromhex(address[2:])))
    return out
