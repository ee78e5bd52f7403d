"""Decode synthetic ERC-20 Transfer logs with evm_decode_log and shift_units through an
in-process DataFusion session and print decoded logs per second.

    .venv/bin/python bench/udf_decode.py [--rows 1000000] [--repeat 3] [--json]

The logs are built with numpy (random addresses, amounts up to 10^24 wei with one in a
thousand at the top of the uint256 range); each run plans the query with `prepare` and
collects the result, in DataFusion's default configuration unless --partitions or
--batch-size say otherwise. Every run's senders and recipients are checked against the
input topics. With --json the last line is the figures as JSON: the functions stage of
`make bench` (bench/functions_stage.py) runs it so. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import pyarrow as pa
from datafusion import SessionConfig, SessionContext

from ampd.sql import prepare, register_functions

SIGNATURE = "Transfer(address indexed from, address indexed to, uint256 value)"
QUERY = f"""
SELECT decoded."from" AS sender, decoded."to" AS recipient,
       shift_units(decoded.value, -18) AS amount
FROM (
    SELECT evm_decode_log(topic1, topic2, topic3, data, '{SIGNATURE}') AS decoded
    FROM logs
    WHERE topic0 = evm_topic('{SIGNATURE}')
)
"""


def synthetic_logs(rows: int, batch_rows: int, seed: int = 7) -> list[pa.RecordBatch]:
    from eth_hash.auto import keccak

    rng = np.random.default_rng(seed)
    topic0 = np.frombuffer(keccak(b"Transfer(address,address,uint256)"), np.uint8)

    def topics() -> np.ndarray:
        words = np.zeros((rows, 32), np.uint8)
        words[:, 12:] = rng.integers(0, 256, (rows, 20), dtype=np.uint8)
        return words

    amounts = np.zeros((rows, 32), np.uint8)
    amounts[:, 22:] = rng.integers(0, 256, (rows, 10), dtype=np.uint8)  # below 2^80 ~ 1.2e24
    huge = rng.random(rows) < 0.001
    amounts[huge, :] = 0xFF
    columns = {
        "topic0": np.tile(topic0, (rows, 1)),
        "topic1": topics(),
        "topic2": topics(),
    }
    batches = []
    for lo in range(0, rows, batch_rows):
        hi = min(rows, lo + batch_rows)
        n = hi - lo
        arrays = {
            name: pa.Array.from_buffers(pa.binary(32), n, [None, pa.py_buffer(data[lo:hi].copy())])
            for name, data in columns.items()
        }
        arrays["topic3"] = pa.nulls(n, pa.binary(32))
        offsets = np.arange(n + 1, dtype=np.int32) * 32
        arrays["data"] = pa.Array.from_buffers(
            pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(amounts[lo:hi].copy())]
        )
        batches.append(pa.RecordBatch.from_pydict(arrays))
    return batches


def run_once(
    batches: list[pa.RecordBatch], partitions: int, batch_size: int = 8192
) -> tuple[float, list[pa.RecordBatch]]:
    config = SessionConfig().with_target_partitions(partitions).with_batch_size(batch_size)
    ctx = SessionContext(config)
    register_functions(ctx)
    per = max(1, len(batches) // partitions)
    ctx.register_record_batches("logs", [batches[i : i + per] for i in range(0, len(batches), per)])
    start = time.perf_counter()
    result = ctx.sql(prepare(ctx, QUERY)).collect()
    elapsed = time.perf_counter() - start
    return elapsed, result


def check(batches: list[pa.RecordBatch], result: list[pa.RecordBatch], rows: int) -> None:
    """Every input row decoded once: the senders and recipients are the topics' addresses
    (as sets: partitions may interleave), and every amount is there."""
    got = pa.Table.from_batches(result)
    if got.num_rows != rows:
        raise SystemExit(f"decoded {got.num_rows} rows, expected {rows}")
    for column, topic in (("sender", "topic1"), ("recipient", "topic2")):
        expected = sorted(v[12:] for b in batches for v in b.column(topic).to_pylist())
        if sorted(got.column(column).to_pylist()) != expected:
            raise SystemExit(f"the decoded {column} addresses differ from the input's {topic}")
    if got.column("amount").null_count:
        raise SystemExit(f"{got.column('amount').null_count} amounts are NULL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--partitions", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--batch-size", type=int, default=8192, help="DataFusion's batch size (its default: 8192)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with the figures as a JSON line")
    args = parser.parse_args()
    batches = synthetic_logs(args.rows, args.batch_rows)
    times = []
    for _ in range(args.repeat):
        elapsed, result = run_once(batches, args.partitions, args.batch_size)
        check(batches, result, args.rows)
        times.append(elapsed)
    best, median = min(times), statistics.median(times)
    print(
        f"{args.rows:,} Transfer logs, {args.partitions} partitions, batches of {args.batch_size}: best {best:.3f} s ({args.rows / best:,.0f} logs/s), "
        f"median {median:.3f} s ({args.rows / median:,.0f} logs/s) over {args.repeat} runs"
    )
    if args.json:
        figures = {
            "rows": args.rows,
            "partitions": args.partitions,
            "batch_size": args.batch_size,
            "seconds": [round(t, 4) for t in times],
            "best_logs_per_second": round(args.rows / best),
            "median_logs_per_second": round(args.rows / median),
        }
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
