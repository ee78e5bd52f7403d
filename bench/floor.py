"""The floor: the least a Python extractor must do, fetching blocks and receipts and no more.

    python bench/floor.py --url URL --start N --end M [--batch-size B] [--concurrency C]

For every block in [N, M] (inclusive): `eth_getBlockByNumber(n, true)` and
`eth_getBlockReceipts(n)`, sent as JSON-RPC batches of B calls (B/2 blocks), C batches in
flight at once over keep-alive connections; each answer is JSON-decoded, its rows counted
and thrown away. Nothing is converted, written or checked beyond the counts. An extractor
that does real work can only be slower; how much slower is what the benchmark shows.

Prints one JSON line: {"blocks", "transactions", "logs", "seconds"}. Exit 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx

DEFAULT_BATCH_SIZE = 100
DEFAULT_CONCURRENCY = 4


class FloorError(RuntimeError):
    pass


async def _fetch_batch(client: httpx.AsyncClient, url: str, blocks: range) -> tuple[int, int, int]:
    body = []
    for n in blocks:
        body.append(
            {
                "jsonrpc": "2.0",
                "id": 2 * n,
                "method": "eth_getBlockByNumber",
                "params": [hex(n), True],
            }
        )
        body.append(
            {
                "jsonrpc": "2.0",
                "id": 2 * n + 1,
                "method": "eth_getBlockReceipts",
                "params": [hex(n)],
            }
        )
    response = await client.post(
        url, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    response.raise_for_status()
    answers = json.loads(response.content)
    if not isinstance(answers, list) or len(answers) != len(body):
        raise FloorError(f"blocks {blocks.start}..{blocks.stop - 1}: malformed batch answer")
    txs = logs = 0
    for answer in answers:
        result = answer.get("result")
        if result is None:
            raise FloorError(f"blocks {blocks.start}..{blocks.stop - 1}: {answer.get('error')}")
        if answer["id"] % 2 == 0:
            txs += len(result["transactions"])
        else:
            logs += sum(len(receipt["logs"]) for receipt in result)
    return len(blocks), txs, logs


async def run(url: str, start: int, end: int, batch_size: int, concurrency: int) -> dict:
    blocks_per_batch = max(1, batch_size // 2)
    chunks = [
        range(n, min(n + blocks_per_batch, end + 1))
        for n in range(start, end + 1, blocks_per_batch)
    ]
    totals = [0, 0, 0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(120.0, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        queue = iter(chunks)

        async def worker() -> None:
            for chunk in queue:
                counts = await _fetch_batch(client, url, chunk)
                for i, c in enumerate(counts):
                    totals[i] += c

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.monotonic() - started
    return {"blocks": totals[0], "transactions": totals[1], "logs": totals[2], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--end", type=int, required=True, help="last block, inclusive")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="calls per batch"
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="batches in flight"
    )
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args.url, args.start, args.end, args.batch_size, args.concurrency))
    except (FloorError, httpx.HTTPError) as exc:
        sys.exit(f"error: floor client against {args.url}: {exc!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
