"""Run ethereum-etl's documented pipeline over a block range (with the peers virtualenv).

    peers-venv/bin/python bench/peer_ethereum_etl.py --url URL --start N --end M --output-dir DIR

The three steps of ethereum-etl's README, each its own `ethereumetl` process:
  1. export_blocks_and_transactions  -> blocks.csv, transactions.csv
  2. extract_csv_column --column hash  -> transaction_hashes.txt
  3. export_receipts_and_logs (one eth_getTransactionReceipt per tx, batched) -> receipts.csv, logs.csv
`--end` is inclusive, as it is for ethereum-etl. Prints one JSON line with each step's seconds;
exit 1 naming the step when one fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--end", type=int, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--max-workers", type=int, default=5)
    args = parser.parse_args()

    etl = str(Path(sys.executable).with_name("ethereumetl"))
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    common = ["--provider-uri", args.url, "--batch-size", str(args.batch_size),
              "--max-workers", str(args.max_workers)]  # fmt: skip
    steps = {
        "export_blocks_and_transactions": [
            etl, "export_blocks_and_transactions",
            "--start-block", str(args.start), "--end-block", str(args.end), *common,
            "--blocks-output", str(out / "blocks.csv"),
            "--transactions-output", str(out / "transactions.csv"),
        ],
        "extract_csv_column": [
            etl, "extract_csv_column", "--input", str(out / "transactions.csv"),
            "--column", "hash", "--output", str(out / "transaction_hashes.txt"),
        ],
        "export_receipts_and_logs": [
            etl, "export_receipts_and_logs",
            "--transaction-hashes", str(out / "transaction_hashes.txt"), *common,
            "--receipts-output", str(out / "receipts.csv"),
            "--logs-output", str(out / "logs.csv"),
        ],
    }  # fmt: skip
    seconds = {}
    for name, command in steps.items():
        started = time.monotonic()
        done = subprocess.run(command)
        seconds[name] = round(time.monotonic() - started, 3)
        if done.returncode != 0:
            sys.exit(f"error: ethereumetl {name} exited with {done.returncode}")
    print(json.dumps({"step_seconds": seconds}))


if __name__ == "__main__":
    main()
