"""One full scan of a query result, read to the end and counted: the query stage's client.

    python bench/query_client.py floor  --files LIST.json --table NS/NAME.TABLE --sql SQL
    python bench/query_client.py jsonl  --url http://HOST:PORT --sql SQL
    python bench/query_client.py flight --url grpc://HOST:PORT --sql SQL

- *floor*: DataFusion in this process (a `SessionContext` with its defaults) over the Parquet
  files listed in LIST.json (a JSON array of paths), registered as table TABLE of schema
  `NS/NAME` (so the SQL is the server's, word for word); its batches are streamed and
  counted. The least any server built on DataFusion must do.
- *jsonl*: `POST /` with the SQL to ampd's JSON Lines endpoint (`Accept-Encoding: identity`),
  the body streamed in 1 MiB reads; rows are its newlines, bytes its JSON bytes.
- *flight*: `GetFlightInfo` with the SQL as the command, `DoGet` of the ticket, every
  batch read; bytes are the batches' Arrow bytes (`RecordBatch.nbytes`).

Nothing is kept: each batch or chunk is counted and dropped. Prints one JSON line,
{"rows", "bytes", "batches", "seconds", "first_batch_seconds"}, where `seconds` runs from
just before the query is sent (or, for the floor, the session is made) to the last byte
read: interpreter start-up and imports are left out. Exit 1 on any error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

_READ = 1 << 20


class ScanError(RuntimeError):
    pass


def scan_floor(files: list[str], table: str, sql: str) -> dict:
    import pyarrow.parquet as pq
    from datafusion import SessionContext
    from datafusion.catalog import Catalog, Schema

    schema_name, _, table_name = table.rpartition(".")
    if not files:
        raise ScanError(f"no committed files for table {table}")
    started = time.monotonic()
    ctx = SessionContext()
    # The files' own Arrow schema, as the server passes the extractor's: without it DataFusion
    # reads strings and binaries as view types, other (larger) batches than the server's.
    arrow_schema = pq.read_schema(files[0])
    frame = None
    for path in files:
        part = ctx.read_parquet(path, schema=arrow_schema)
        frame = part if frame is None else frame.union(part)
    catalog, schema = Catalog.memory_catalog(), Schema.memory_schema()
    schema.register_table(table_name, frame.into_view())
    catalog.register_schema(schema_name, schema)
    catalog.register_schema("public", Schema.memory_schema())
    ctx.register_catalog_provider("datafusion", catalog)
    stream = ctx.sql(sql).execute_stream()
    rows = nbytes = batches = 0
    first = None
    for batch in stream:
        arrow = batch.to_pyarrow()
        if first is None:
            first = time.monotonic() - started
        rows += arrow.num_rows
        nbytes += arrow.nbytes
        batches += 1
    return _summary(rows, nbytes, batches, started, first)


def scan_jsonl(url: str, sql: str) -> dict:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=3600)
    started = time.monotonic()
    conn.request(
        "POST",
        parts.path or "/",
        body=sql.encode(),
        headers={"Content-Type": "text/plain", "Accept-Encoding": "identity"},
    )
    response = conn.getresponse()
    if response.status != 200:
        raise ScanError(f"POST {url}: {response.status} {response.read()[:2000]!r}")
    if response.getheader("content-encoding", "identity") != "identity":
        raise ScanError(f"POST {url}: answered with {response.getheader('content-encoding')}")
    rows = nbytes = reads = 0
    first = None
    tail = b""
    while chunk := response.read1(_READ):
        if first is None:
            first = time.monotonic() - started
        rows += chunk.count(b"\n")
        nbytes += len(chunk)
        reads += 1
        tail = (tail + chunk)[-4096:]
    conn.close()
    # A failure after the status line is sent ends the body with an error object as its last line.
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if last.startswith(b'{"error_code"'):
        raise ScanError(f"POST {url}: the stream ended with {last.decode(errors='replace')}")
    return _summary(rows, nbytes, reads, started, first)


def scan_flight(url: str, sql: str) -> dict:
    import pyarrow.flight as flight

    started = time.monotonic()
    client = flight.connect(url)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
    rows = nbytes = batches = 0
    first = None
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket)
        for chunk in reader:
            if chunk.data is None:
                continue
            if first is None:
                first = time.monotonic() - started
            rows += chunk.data.num_rows
            nbytes += chunk.data.nbytes
            batches += 1
    client.close()
    return _summary(rows, nbytes, batches, started, first)


def _summary(rows: int, nbytes: int, batches: int, started: float, first: float | None) -> dict:
    return {
        "rows": rows,
        "bytes": nbytes,
        "batches": batches,
        "seconds": time.monotonic() - started,
        "first_batch_seconds": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", choices=("floor", "jsonl", "flight"))
    parser.add_argument("--sql", required=True)
    parser.add_argument("--url", help="the endpoint (jsonl, flight)")
    parser.add_argument("--files", type=Path, help="JSON array of Parquet paths (floor)")
    parser.add_argument("--table", help="NS/NAME.TABLE, the table the SQL reads (floor)")
    parser.add_argument(
        "--times",
        type=int,
        default=1,
        help="scan this many times back to back and report the median (a scan of a tenth "
        "of a second is mostly noise once)",
    )
    args = parser.parse_args()
    if args.path == "floor" and (args.files is None or args.table is None):
        parser.error("floor needs --files and --table")
    if args.path != "floor" and args.url is None:
        parser.error(f"{args.path} needs --url")
    results = []
    for _ in range(max(args.times, 1)):
        try:
            if args.path == "floor":
                result = scan_floor(json.loads(args.files.read_text()), args.table, args.sql)
            elif args.path == "jsonl":
                result = scan_jsonl(args.url, args.sql)
            else:
                result = scan_flight(args.url, args.sql)
        except Exception as exc:  # noqa: BLE001 - any failure is this run's error line
            sys.exit(f"error: {args.path} scan of {args.sql!r}: {type(exc).__name__}: {exc}")
        if results and result["rows"] != results[0]["rows"]:
            sys.exit(f"error: {args.sql!r}: {result['rows']} rows, then {results[0]['rows']}")
        results.append(result)
    summary = sorted(results, key=lambda r: r["seconds"])[len(results) // 2]
    if len(results) > 1:
        summary = {**summary, "all_seconds": [round(r["seconds"], 4) for r in results]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
