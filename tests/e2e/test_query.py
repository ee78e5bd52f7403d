"""Query serving against a real `ampd server` process over data extracted from a real anvil:
JSON Lines encodings and errors, Flight (Flight SQL command, raw SQL, ADBC), safety rules,
limits, snapshot isolation while files are committed, and streaming queries."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from datafusion import SessionContext

from ampd.metadb.managed import ManagedPostgres
from ampd.providers.evm_rpc.schema import TABLES
from support.anvil import Anvil
from support.chain import build_varied_chain
from support.cluster import Cluster, fill_chain
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(300)]

STATEMENT_QUERY = "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (enough to build Any and CommandStatementQuery)."""
    length, out = len(payload), bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(out) + payload


def statement_query(sql: str) -> bytes:
    return _field(1, STATEMENT_QUERY.encode()) + _field(2, _field(1, sql.encode()))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres) -> Iterator[dict]:
    with Anvil() as anvil:
        info = build_varied_chain(anvil)
        head = fill_chain(anvil, 300, txs_per_block=2)
        url = create_database(pg_cluster)
        cluster = Cluster(
            tmp_path_factory.mktemp("query"),
            url,
            anvil,
            {
                # Long enough for any real query on a loaded machine; the runaway query of
                # the timeout test runs for minutes.
                "query_timeout_secs": 10,
                "poll_interval_secs": 0.2,
                "writer": {"segment_flush_interval_secs": 0.5},
            },
        )
        try:
            cluster.start_controller()
            cluster.start_worker("w")
            manifest_hash = cluster.register()
            job_id = cluster.deploy({"end_block": str(head), "parallelism": 3})
            assert cluster.wait_job(job_id)["status"] == "COMPLETED"
            # The same manifest in the global namespace: `chain.blocks` reads the same files.
            assert cluster.register(namespace="_", name="chain") == manifest_hash
            server, jsonl, port = cluster.start_server()
            yield {
                "cluster": cluster,
                "anvil": anvil,
                "head": head,
                "info": info,
                "hash": manifest_hash,
                "jsonl": jsonl,
                "port": port,
                "server": server,
            }
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, url)


def reference(env: dict, sql: str) -> pa.Table:
    """DataFusion in-process over the committed files: what the server must answer."""
    ctx = SessionContext()
    for table in TABLES:
        files = [f for f in env["cluster"].committed_files(env["hash"]) if f["table"] == table]
        paths = [str(env["cluster"].data_dir / f["path"]) for f in files]
        ctx.register_record_batches(
            table, [pa.concat_tables([_read(p) for p in paths]).to_batches()]
        )
    return ctx.sql(sql).to_arrow_table()


def _read(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def post(env: dict, sql: str | bytes, **kwargs) -> httpx.Response:  # noqa: ANN003
    return httpx.post(env["jsonl"], content=sql, timeout=120, **kwargs)


def lines(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line]


# -- JSON Lines --


def test_jsonl_rows_and_encodings(env: dict) -> None:
    response = post(
        env,
        'SELECT block_num, hash, miner, timestamp, base_fee_per_gas, gas_used FROM "test/chain".blocks ORDER BY block_num',
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    rows = lines(response)
    assert [r["block_num"] for r in rows] == list(range(env["head"] + 1))
    for row in rows[:20]:
        block = env["anvil"].block(row["block_num"], full=False)
        assert row["hash"] == block["hash"]  # 0x-prefixed lowercase hex
        assert row["miner"] == block["miner"].lower()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(block["timestamp"], 16)))
        assert row["timestamp"] == stamp
        assert row["base_fee_per_gas"] == int(block["baseFeePerGas"], 16)  # a JSON number
        assert row["gas_used"] == int(block["gasUsed"], 16)


def test_jsonl_decimals_beyond_2_53_are_strings(env: dict) -> None:
    sql = (
        "SELECT CAST('123456789012345678901234567890' AS DECIMAL(38, 0)) AS big, "
        "CAST(9007199254740992 AS DECIMAL(38, 0)) AS edge, CAST(42 AS DECIMAL(38, 0)) AS small, "
        "arrow_cast(X'00ff', 'Binary') AS bytes"
    )
    row = lines(post(env, sql))[0]
    assert row == {
        "big": "123456789012345678901234567890",
        "edge": 9007199254740992,
        "small": 42,
        "bytes": "0x00ff",
    }


def test_jsonl_lists_and_structs(env: dict) -> None:
    sql = 'SELECT tx_hash, type, access_list FROM "test/chain".transactions WHERE type = 1 LIMIT 1'
    row = lines(post(env, sql))[0]
    entry = row["access_list"][0]
    assert entry["address"].startswith("0x") and len(entry["address"]) == 42
    assert all(key.startswith("0x") and len(key) == 66 for key in entry["storage_keys"])


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_jsonl_compression_on_request(env: dict, encoding: str) -> None:
    sql = 'SELECT * FROM "test/chain".logs ORDER BY block_num, log_index'
    plain = post(env, sql).content
    with httpx.Client() as client:
        response = client.post(env["jsonl"], content=sql, headers={"Accept-Encoding": encoding})
        raw = response.read()  # httpx decodes; check the header and decode ourselves too
    assert response.headers["content-encoding"] == encoding
    stream = httpx.post(env["jsonl"], content=sql, headers={"Accept-Encoding": encoding})
    assert stream.content == plain
    direct = httpx.Request("POST", env["jsonl"], content=sql, headers={"Accept-Encoding": encoding})
    with httpx.Client() as client:
        undecoded = client.send(direct, stream=True)
        body = b"".join(undecoded.iter_raw())
    decoded = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress}[
        encoding
    ](body)
    assert decoded == plain and len(body) < len(plain)
    assert raw == plain


ERRORS = [
    (b"", 400, "INVALID_SQL_STRING"),
    (b"   -- nothing\n", 400, "INVALID_SQL_STRING"),
    (b"SELECT '\xff\xfe'", 400, "INVALID_SQL_STRING"),
    (b"SELEC block_num FROM blocks", 400, "SQL_PARSE_ERROR"),
    (b'SELECT * FROM "test/chain".blocks SETTINGS stream = true', 400, "STREAMING_NOT_SUPPORTED"),
    (b'SELECT * FROM "test/chain".no_table', 404, "TABLE_NOT_FOUND"),
    (b'SELECT * FROM "no/such".blocks', 404, "DATASET_NOT_FOUND"),
    (b"SELECT * FROM blocks", 404, "TABLE_NOT_FOUND"),
    (b"SELECT CAST('abc' AS INT) / 0", 500, "QUERY_FAILED"),
    (b"CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'", 400, "SQL_NOT_ALLOWED"),
    (b"COPY (SELECT 1) TO '/tmp/out.parquet'", 400, "SQL_NOT_ALLOWED"),
    (b'INSERT INTO "test/chain".blocks SELECT * FROM "test/chain".blocks', 400, "SQL_NOT_ALLOWED"),
    (b'DROP TABLE "test/chain".blocks', 400, "SQL_NOT_ALLOWED"),
    (b"SET datafusion.execution.batch_size = 1", 400, "SQL_NOT_ALLOWED"),
    (b"SELECT * FROM read_parquet('/etc/passwd')", 400, "SQL_NOT_ALLOWED"),
    (b"SELECT * FROM read_csv('http://127.0.0.1:1/x.csv')", 400, "SQL_NOT_ALLOWED"),
    (b"SELECT * FROM '/etc/passwd'", 400, "SQL_NOT_ALLOWED"),
    (b"SELECT * FROM 'https://example.com/x.parquet'", 400, "SQL_NOT_ALLOWED"),
    (b'SELECT * FROM "/etc/hosts"', 400, "SQL_NOT_ALLOWED"),
    (b'SELECT * FROM "data.parquet"', 400, "SQL_NOT_ALLOWED"),
    (b'SELECT block_num AS _b FROM "test/chain".blocks', 400, "INVALID_PLAN"),
    (
        b'SELECT b.block_num, l.block_num FROM "test/chain".blocks b'
        b' JOIN "test/chain".logs l ON b.block_num = l.block_num',
        400,
        "INVALID_PLAN",
    ),
]


@pytest.mark.parametrize(("sql", "status", "code"), ERRORS)
def test_jsonl_errors(env: dict, sql: bytes, status: int, code: str) -> None:
    response = post(env, sql)
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code, response.text
    assert response.json()["error_message"]


# Every form Amp resolves: [namespace/]name[@revision], namespace `_` and the default
# revision when left out; unquoted names are lower-cased.
REFERENCES = [
    "chain.blocks",
    "CHAIN.blocks",
    '"chain".blocks',
    '"chain@1.0.0".blocks',
    '"chain@latest".blocks',
    '"_/chain".blocks',
    '"_/chain@dev".blocks',
    '"test/chain".blocks',
    '"test/chain@1.0.0".blocks',
]


@pytest.mark.parametrize("table", REFERENCES)
def test_dataset_references_as_amp_resolves_them(env: dict, table: str) -> None:
    response = post(env, f"SELECT count(*) AS n, max(b.block_num) AS top FROM {table} AS b")
    assert response.status_code == 200, response.text
    assert lines(response) == [{"n": env["head"] + 1, "top": env["head"]}]


def test_a_manifest_hash_is_a_revision_too(env: dict) -> None:
    response = post(env, f'SELECT count(*) AS n FROM "chain@{env["hash"]}".blocks')
    assert lines(response) == [{"n": env["head"] + 1}], response.text


@pytest.mark.parametrize(
    ("sql", "code", "message"),
    [
        ("SELECT * FROM nope.blocks", "DATASET_NOT_FOUND", "dataset '_/nope' not found"),
        (
            'SELECT * FROM "chain@9.9.9".blocks',
            "DATASET_NOT_FOUND",
            "revision '9.9.9' of dataset '_/chain' not found",
        ),
        ('SELECT * FROM "other/chain".blocks', "DATASET_NOT_FOUND", "'other/chain' not found"),
        ("SELECT * FROM chain.nope", "TABLE_NOT_FOUND", "table 'chain.nope' not found"),
    ],
)
def test_unknown_references_name_what_is_missing(
    env: dict, sql: str, code: str, message: str
) -> None:
    response = post(env, sql)
    assert response.status_code == 404, response.text
    assert response.json()["error_code"] == code
    assert message in response.json()["error_message"]


def test_show_tables_and_information_schema_list_the_datasets(env: dict) -> None:
    shown = {(r["table_schema"], r["table_name"]) for r in lines(post(env, "SHOW TABLES"))}
    for dataset in ("_/chain", "test/chain"):
        assert {(dataset, t) for t in TABLES} <= shown, shown
    columns = lines(
        post(
            env,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'test/chain' AND table_name = 'logs' ORDER BY ordinal_position",
        )
    )
    assert [c["column_name"] for c in columns] == TABLES["logs"].names


# The chain's log contract emits LOG3 with topics LOG_TOPICS[:3] (no data to decode).
DECODE = (
    "SELECT d['a'] AS a, d['b'] AS b, shift_units(d['b'], -18) AS eth FROM ("
    " SELECT evm_decode_log(topic1, topic2, topic3, data,"
    " 'Ev(bytes32 indexed a, uint256 indexed b)') AS d"
    ' FROM "test/chain".logs WHERE topic2 IS NOT NULL AND topic3 IS NULL) t'
)


def test_evm_functions_on_both_endpoints(env: dict) -> None:
    from support.chain import LOG_TOPICS

    b = int.from_bytes(LOG_TOPICS[2], "big")
    eth = f"{b // 10**18}.{b % 10**18:018d}".rstrip("0")
    rows = lines(post(env, DECODE))
    assert rows and all(
        r == {"a": "0x" + LOG_TOPICS[1].hex(), "b": str(b), "eth": eth} for r in rows
    )
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(DECODE.encode()))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.num_rows == len(rows)
    assert set(table.column("a").to_pylist()) == {LOG_TOPICS[1]}
    topic = lines(post(env, "SELECT evm_topic('Transfer(address,address,uint256)') AS t"))
    assert topic == [{"t": "0x" + LOG_TOPICS[1].hex()}]  # keccak of the signature


def test_evm_function_errors_name_the_function(env: dict) -> None:
    response = post(env, "SELECT evm_decode_log(NULL, NULL, NULL, NULL, 'not a signature') AS d")
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PLAN"
    assert "evm_decode_log" in response.json()["error_message"]
    assert "__" not in response.json()["error_message"]  # no internal UDF name
    response = post(env, "SELECT evm_nope(1) AS x")
    assert response.status_code == 400, response.text


def test_eth_call_over_both_transports_answers_as_the_node(env: dict) -> None:
    """A dataset's eth_call per row of one of its tables, through JSON Lines and Flight:
    the log contract returns nothing for no input and reverts for any input."""
    info, anvil = env["info"], env["anvil"]
    first = info.by_kind("deploy")[0].block
    sql = (
        f"SELECT block_num, \"test/chain\".eth_call(NULL, evm_encode_hex('{info.contract}'), "
        "CASE WHEN block_num % 2 = 0 THEN X'01' END, block_num) AS r "
        f'FROM "test/chain".blocks WHERE block_num BETWEEN {first} AND {first + 3} '
        "ORDER BY block_num"
    )
    expected = []
    for block in range(first, first + 4):
        tx = {"to": info.contract, **({"input": "0x01"} if block % 2 == 0 else {})}
        answer = anvil.rpc_raw("eth_call", tx, hex(block))
        error = answer.get("error")
        if error is None:
            expected.append((block, bytes.fromhex(answer["result"][2:]), None))
        else:
            raw = error.get("data")
            data = bytes.fromhex(raw[2:]) if isinstance(raw, str) else None
            expected.append((block, data, error.get("message") or None))
    assert any(m for _, _, m in expected) and any(m is None for _, _, m in expected)
    response = post(env, sql)
    assert response.status_code == 200, response.text
    shown = [
        (r["block_num"], None if r["r"]["data"] is None else bytes.fromhex(r["r"]["data"][2:]),
         r["r"]["message"])
        for r in lines(response)
    ]  # fmt: skip
    assert shown == expected
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    info_ = client.get_flight_info(flight.FlightDescriptor.for_command(statement_query(sql)))
    table = client.do_get(info_.endpoints[0].ticket).read_all()
    assert table.schema.field("r").type == pa.struct(
        [pa.field("data", pa.binary()), pa.field("message", pa.utf8())]
    )
    rows = table.to_pylist()
    assert [(r["block_num"], r["r"]["data"], r["r"]["message"]) for r in rows] == expected


def test_health(env: dict) -> None:
    assert httpx.get(env["jsonl"] + "/health").status_code == 200


# -- Flight --


SQL = 'SELECT block_num, tx_index, tx_hash, "from", "to", value, gas_price, access_list FROM "test/chain".transactions ORDER BY block_num, tx_index'


def test_flight_statement_query_raw_sql_and_adbc_agree_with_datafusion(env: dict) -> None:
    expected = reference(env, SQL.replace('"test/chain".', ""))
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    tables = []
    for command in (statement_query(SQL), SQL.encode()):
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        assert len(info.endpoints) == 1
        tables.append(client.do_get(info.endpoints[0].ticket).read_all())
    import adbc_driver_flightsql.dbapi as dbapi

    with (
        dbapi.connect(f"grpc://127.0.0.1:{env['port']}", autocommit=True) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(SQL)
        tables.append(cursor.fetch_arrow_table())
    for table in tables:
        assert table.num_rows == expected.num_rows > 0
        assert table.equals(expected), "Flight answer differs from DataFusion over the files"


def test_a_flight_batch_query_tags_its_batches_with_the_ranges_it_read(env: dict) -> None:
    """As Amp does: every data batch carries the block ranges of the tables the query read
    (ranges_complete false), and an empty batch saying true ends the answer."""
    anvil, head = env["anvil"], env["head"]
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    sql = 'SELECT block_num FROM "test/chain".blocks WHERE block_num % 7 = 0'
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
    reader = client.do_get(info.endpoints[0].ticket)
    chunks = []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        chunks.append((chunk.data.num_rows, json.loads(chunk.app_metadata.to_pybytes())))
    ranges = [
        {
            "numbers": {"start": 0, "end": head},
            "network": "anvil",
            "hash": anvil.block(head, False)["hash"],
            "prev_hash": anvil.block(0, False)["parentHash"],
        }
    ]
    assert sum(rows for rows, _ in chunks) == head // 7 + 1
    assert [meta for _, meta in chunks[:-1]] == [{"ranges": ranges, "ranges_complete": False}] * (
        len(chunks) - 1
    )
    assert chunks[-1] == (0, {"ranges": ranges, "ranges_complete": True})
    literal = client.do_get(
        client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1 AS one"))
        .endpoints[0]
        .ticket
    ).read_all()
    assert literal.to_pylist() == [{"one": 1}], "a query of no table: empty ranges, same rows"


# Results of the types that tables and SQL produce, each as DataFusion answers it in-process.
TYPE_MATRIX = [
    "SELECT [1, NULL, 3] AS a",
    "SELECT [[1], [2, 3]] AS nested",
    "SELECT named_struct('x', 1, 'y', 'two') AS s",
    "SELECT [named_struct('x', 1)] AS list_of_structs",
    "SELECT arrow_cast(12345678901234567890123456789, 'Decimal128(38, 0)') AS d128",
    "SELECT arrow_cast('1234567890123456789012345678901234567890', 'Decimal256(76, 0)') AS d256",
    "SELECT arrow_cast(arrow_cast('ab', 'Binary'), 'FixedSizeBinary(2)') AS fsb",
    "SELECT arrow_cast(0, 'Timestamp(Nanosecond, Some(\"+00:00\"))') AS ts",
    'SELECT hash, logs_bloom, difficulty, "timestamp" FROM "test/chain".blocks'
    " ORDER BY block_num LIMIT 3",
    "SELECT tx_hash, access_list, blob_versioned_hashes, authorization_list"
    ' FROM "test/chain".transactions ORDER BY block_num, tx_index LIMIT 3',
    'SELECT topic0, data FROM "test/chain".logs WHERE false',  # empty: schema, no rows
]


@pytest.mark.parametrize("sql", TYPE_MATRIX)
def test_flight_streams_every_result_type_with_its_declared_schema(env: dict, sql: str) -> None:
    expected = reference(env, sql.replace('"test/chain".', ""))
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema.equals(info.schema)
    assert table.num_rows == expected.num_rows
    assert table.to_pylist() == expected.to_pylist()
    # The same through Flight SQL's ADBC driver: its types and values, an empty result too.
    import adbc_driver_flightsql.dbapi as dbapi

    with (
        dbapi.connect(f"grpc://127.0.0.1:{env['port']}", autocommit=True) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(sql)
        fetched = cursor.fetch_arrow_table()
    assert [f.type for f in fetched.schema] == [f.type for f in expected.schema]
    assert fetched.to_pylist() == expected.to_pylist()


def test_flight_errors_map_to_grpc_statuses(env: dict) -> None:
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    with pytest.raises(pa.ArrowInvalid, match="SQL_NOT_ALLOWED") as refused:
        client.get_flight_info(flight.FlightDescriptor.for_command(b"DROP TABLE x"))
    with pytest.raises(pa.ArrowKeyError, match="TABLE_NOT_FOUND") as missing:
        client.get_flight_info(
            flight.FlightDescriptor.for_command(b'SELECT * FROM "test/chain".nope')
        )
    with pytest.raises(pa.ArrowInvalid, match="SQL_PARSE_ERROR") as unparsed:
        client.get_flight_info(flight.FlightDescriptor.for_command(statement_query("SELEC 1")))
    # The message only: no traceback, no file of the server's.
    for error in (refused, missing, unparsed):
        assert "Traceback" not in str(error.value) and ".py" not in str(error.value), error.value


def test_streaming_rejects_non_incremental_plans(env: dict) -> None:
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    for sql in (
        'SELECT count(*) FROM "test/chain".blocks',
        'SELECT DISTINCT miner FROM "test/chain".blocks',
        'SELECT * FROM "test/chain".blocks LIMIT 5',
        'SELECT * FROM "test/chain".blocks ORDER BY block_num',
        'SELECT block_num, row_number() OVER (ORDER BY block_num) FROM "test/chain".blocks',
    ):
        with pytest.raises(pa.ArrowInvalid, match="INVALID_QUERY: non-incremental queries"):
            client.get_flight_info(
                flight.FlightDescriptor.for_command((sql + " SETTINGS stream = true").encode())
            )
    # Grouped by _block_num first, each microbatch's groups are whole: Amp streams these.
    for sql in (
        'SELECT _block_num, count(*) AS n FROM "test/chain".logs GROUP BY _block_num',
        'SELECT DISTINCT ON (_block_num) _block_num, tx_hash FROM "test/chain".logs',
    ):
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command((sql + " SETTINGS stream = true").encode())
        )
        assert info.schema.names[0] == "_block_num"


# -- limits and isolation --


def test_timeout_cancels_a_runaway_query_while_another_completes(env: dict) -> None:
    # Billions of rows through one join: seconds of CPU on one of DataFusion's threads.
    slow = 'SELECT sum(a.log_index + x.value) FROM "test/chain".logs a, generate_series(1, 100000000) x'
    results: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: results.setdefault("slow", post(env, slow)))
    thread.start()
    time.sleep(0.3)
    fast = post(env, 'SELECT count(*) AS n FROM "test/chain".blocks')
    thread.join(60)
    assert fast.status_code == 200, fast.text
    assert lines(fast) == [{"n": env["head"] + 1}]
    assert results["slow"].status_code == 500
    assert results["slow"].json()["error_code"] == "QUERY_TIMEOUT"
    assert "query_timeout_secs" in results["slow"].json()["error_message"]
    assert post(env, "SELECT 1 AS one").status_code == 200, "the server keeps serving"


def _rss_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def test_a_million_rows_stream_in_bounded_memory(env: dict) -> None:
    # A server of its own: a generous time limit, and its memory is this query's alone.
    server, url, _ = env["cluster"].start_server(
        "big-server", env={"AMP_CONFIG_QUERY_TIMEOUT_SECS": "600"}
    )
    pid = server.pid
    before = _rss_kib(pid, "VmRSS")
    blocks = env["head"] + 1
    repeat = -(-1_000_000 // (blocks * blocks))  # enough copies for a million rows
    sql = (
        "SELECT b.block_num, b.hash, b.parent_hash, b.logs_bloom, x.block_num AS x, y.block_num AS y "
        'FROM "test/chain".blocks b, "test/chain".blocks x, '
        f'(SELECT block_num FROM "test/chain".blocks LIMIT {repeat}) y'
    )
    rows = size = 0
    headers = {"Accept-Encoding": "identity"}
    with httpx.stream("POST", url, content=sql, headers=headers, timeout=300) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            size += len(chunk)
            rows += chunk.count(b"\n")
    assert rows == blocks * blocks * repeat >= 1_000_000
    peak_growth = (_rss_kib(pid, "VmHWM") - before) * 1024
    assert size > 500 * 1024 * 1024
    print(f"streamed {rows} rows, {size >> 20} MiB; server peak RSS grew {peak_growth >> 20} MiB")
    assert peak_growth < size / 4, (
        f"server peak grew {peak_growth >> 20} MiB for a {size >> 20} MiB result"
    )
    server.stop()


def test_queries_during_extraction_see_whole_files_only(
    env: dict, tmp_path: Path, pg_cluster: ManagedPostgres
) -> None:
    anvil = env["anvil"]
    cluster = env["cluster"]
    # A second, slow dataset being extracted while we query it.
    manifest = {"kind": "evm-rpc", "network": "anvil", "start_block": 1}
    manifest_hash = cluster.register(name="live", manifest=manifest)
    cluster.procs["w"].stop()
    cluster.start_worker(
        "slow", env={"AMP_EXTRACT_CHUNK_BLOCKS": "7", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"}
    )
    job_id = cluster.deploy({"end_block": str(env["head"])}, ref="test/live/versions/1.0.0")
    seen: list[list[int]] = []
    while cluster.job(job_id)["status"] not in ("COMPLETED", "ERROR", "FATAL"):
        response = post(env, 'SELECT block_num FROM "test/live".blocks')
        assert response.status_code == 200
        seen.append(sorted(r["block_num"] for r in lines(response)))
    assert cluster.job(job_id)["status"] == "COMPLETED"
    files = [f for f in cluster.committed_files(manifest_hash) if f["table"] == "blocks"]
    partial = [blocks for blocks in seen if blocks and len(blocks) < env["head"]]
    assert len(seen) >= 2
    for blocks in seen:
        present = set(blocks)
        assert len(present) == len(blocks), "a block answered twice"
        for f in files:
            inside = set(range(f["start_block"], f["end_block"] + 1)) & present
            assert not inside or len(inside) == f["end_block"] - f["start_block"] + 1, (
                "a partial file was visible"
            )
    del partial, anvil


class StreamReader:
    """A streaming Flight query read on a thread: each chunk's rows and app_metadata."""

    def __init__(
        self, env: dict, sql: str, resume: dict | None = None, column: str = "block_num"
    ) -> None:
        client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
        headers = [(b"amp-stream", b"true")]
        if resume is not None:
            headers.append((b"amp-resume", json.dumps(resume).encode()))
        options = flight.FlightCallOptions(headers=headers)
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
        self.reader = client.do_get(info.endpoints[0].ticket, options)
        self.column = column
        self.chunks: list[tuple[list[int], dict | None]] = []  # (`column` values, metadata)
        self.errors: list[Exception] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._done.is_set():
                chunk = self.reader.read_chunk()
                rows = chunk.data.column(self.column).to_pylist() if chunk.data is not None else []
                meta = chunk.app_metadata
                self.chunks.append((rows, json.loads(meta.to_pybytes()) if meta else None))
        except Exception as exc:  # noqa: BLE001 - the stream is cancelled at the end
            if not self._done.is_set():
                self.errors.append(exc)

    def past(self, block: int) -> bool:
        """Whether a row of `block` or a later one came (or the stream failed)."""
        received = self.received
        return bool(received and received[-1] >= block) or bool(self.errors)

    def ended(self) -> bool:
        """Whether the last batch that came ended a microbatch."""
        meta = self.chunks[-1][1] if self.chunks else None
        return bool(meta and meta["ranges_complete"])

    @property
    def received(self) -> list[int]:
        return [n for rows, _ in list(self.chunks) for n in rows]

    def close(self) -> None:
        self._done.set()
        self.reader.cancel()
        self._thread.join(10)


def assert_amp_microbatches(chunks: list[tuple[list[int], dict | None]], anvil: Anvil) -> None:
    """Amp's protocol: every batch carries its block ranges (numbers, network, the end
    block's hash, the start block's parent hash); data batches say ranges_complete false,
    and each microbatch ends with an empty batch saying true, with the same ranges."""
    assert chunks and all(meta is not None for _, meta in chunks), "a batch without metadata"
    open_ranges = None
    for rows, meta in chunks:
        assert meta is not None and meta["ranges"], meta
        for r in meta["ranges"]:
            start, end = r["numbers"]["start"], r["numbers"]["end"]
            assert r["network"] == "anvil"
            assert r["hash"] == anvil.block(end, False)["hash"]
            assert r["prev_hash"] == anvil.block(start, False)["parentHash"]
            assert not rows or start <= min(rows) <= max(rows) <= end
        if meta["ranges_complete"]:
            assert rows == [], "the batch that ends a microbatch is empty"
            assert open_ranges in (None, meta["ranges"])
            open_ranges = None
        else:
            assert open_ranges in (None, meta["ranges"]), "a microbatch's batches share ranges"
            open_ranges = meta["ranges"]
    assert open_ranges is None, "the last microbatch was not ended"


def ensure_a_worker(cluster: Cluster) -> None:
    if not any(
        name.startswith(("w", "slow")) and proc.popen.poll() is None
        for name, proc in cluster.procs.items()
    ):
        cluster.start_worker(f"w{len(cluster.procs)}")


def test_streaming_query_receives_new_blocks_in_order(env: dict) -> None:
    cluster, anvil = env["cluster"], env["anvil"]
    cluster.register(
        name="tail", manifest={"kind": "evm-rpc", "network": "anvil", "start_block": 0}
    )
    ensure_a_worker(cluster)
    job_id = cluster.deploy({"end_block": None}, ref="test/tail/versions/1.0.0")
    head = anvil.block_number()
    cluster.wait_until(
        lambda: (
            lines(post(env, 'SELECT max(block_num) AS m FROM "test/tail".blocks'))[0]["m"] == head
        ),
        what="the tail job caught up",
    )
    stream = StreamReader(env, 'SELECT block_num, hash FROM "test/tail".blocks WHERE block_num > 5')
    try:
        cluster.wait_until(
            lambda: len(stream.received) >= head - 5 or stream.errors, what="the committed rows"
        )
        assert not stream.errors, stream.errors
        new_head = anvil.mine(3)
        cluster.wait_until(
            lambda: stream.past(new_head),
            timeout=30,
            what="the new blocks streamed",
        )
        cluster.wait_until(
            stream.ended,
            what="the microbatch ended",
        )
    finally:
        stream.close()
    assert stream.received == list(range(6, new_head + 1)), stream.received
    assert_amp_microbatches(stream.chunks, anvil)
    backfill = stream.chunks[0][1]
    assert backfill is not None and backfill["ranges"][0]["numbers"]["start"] == 0
    assert backfill["ranges"][0]["numbers"]["end"] == head, "the backfill says what it covers"

    # Resumed from the cursor of the last microbatch it finished: only what came after.
    last = stream.chunks[-1][1]
    assert last is not None and last["ranges_complete"]
    end, end_hash = last["ranges"][0]["numbers"]["end"], last["ranges"][0]["hash"]
    later = anvil.mine(2)
    sql = 'SELECT block_num FROM "test/tail".blocks'
    cluster.wait_until(
        lambda: (
            lines(post(env, 'SELECT max(block_num) AS m FROM "test/tail".blocks'))[0]["m"] == later
        ),
        what="the tail job caught up again",
    )
    again = StreamReader(env, sql, resume={"anvil": {"number": end, "hash": end_hash}})
    try:
        cluster.wait_until(
            lambda: again.past(later),
            what="the resumed stream",
        )
        time.sleep(0.5)  # anything more (a resent block) would arrive meanwhile
    finally:
        again.close()
    assert not again.errors, again.errors
    assert again.received == list(range(end + 1, later + 1)), again.received
    assert_amp_microbatches(again.chunks, anvil)
    # A cursor on another chain (its hash is not ours): the stream starts over.
    forked = StreamReader(env, sql, resume={"anvil": {"number": end, "hash": "0x" + "ab" * 32}})
    try:
        cluster.wait_until(
            lambda: forked.past(later),
            what="the stream from a forked cursor",
        )
    finally:
        forked.close()
    assert forked.received == list(range(0, later + 1)), "not started over"
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    for bad, expected in (
        (b"{not json", "amp-resume is not JSON"),
        (b'{"anvil": {"number": -1, "hash": "0x00"}}', "amp-resume['anvil']"),
    ):
        options = flight.FlightCallOptions(headers=[(b"amp-stream", b"true"), (b"amp-resume", bad)])
        with pytest.raises(pa.ArrowInvalid, match=re.escape(expected)):
            client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()), options)
    with cluster.api() as api:
        api.put(f"/jobs/{job_id}/stop")


def test_a_streaming_query_never_gets_another_datasets_rows(env: dict) -> None:
    """Two datasets with the same tables follow the head and commit the same new blocks at
    once; a streaming query over one of them receives each of its blocks once."""
    cluster, anvil = env["cluster"], env["anvil"]
    jobs = []
    for name, start in (("twin_a", 2), ("twin_b", 3)):  # two manifests: two revisions
        cluster.register(
            name=name, manifest={"kind": "evm-rpc", "network": "anvil", "start_block": start}
        )
    ensure_a_worker(cluster)
    for name in ("twin_a", "twin_b"):
        jobs.append(cluster.deploy({"end_block": None}, ref=f"test/{name}/versions/1.0.0"))
    head = anvil.block_number()

    def caught_up() -> bool:
        return all(
            lines(post(env, f'SELECT max(block_num) AS m FROM "test/{n}".blocks'))[0]["m"] == head
            for n in ("twin_a", "twin_b")
        )

    cluster.wait_until(caught_up, what="both datasets caught up")
    stream = StreamReader(env, 'SELECT block_num FROM "test/twin_a".blocks')
    counted = StreamReader(  # an aggregate grouped by _block_num streams too
        env,
        'SELECT _block_num, count(*) AS n FROM "test/twin_a".blocks GROUP BY _block_num',
        column="_block_num",
    )
    try:
        cluster.wait_until(
            lambda: len(stream.received) >= head - 1 or stream.errors, what="the backfill"
        )
        new_head = head
        for _ in range(3):  # both jobs commit each new block, at about the same moment
            new_head = anvil.mine(2)
            cluster.wait_until(
                lambda: stream.past(new_head),  # noqa: B023
                timeout=30,
                what="the new blocks streamed",
            )
        cluster.wait_until(
            caught_up_to(env, "twin_b", new_head), what="the other dataset's commits"
        )
        cluster.wait_until(
            lambda: counted.past(new_head),
            what="the aggregate's stream",
        )
        time.sleep(1.0)  # time for a wrongly routed microbatch to arrive
    finally:
        stream.close()
        counted.close()
    assert not stream.errors, stream.errors
    assert stream.received == list(range(2, new_head + 1)), "a block missing or sent twice"
    assert_amp_microbatches(stream.chunks, anvil)
    assert not counted.errors, counted.errors
    assert counted.received == list(range(2, new_head + 1)), "each block's group once"
    assert_amp_microbatches(counted.chunks, anvil)
    with cluster.api() as api:
        for job_id in jobs:
            api.put(f"/jobs/{job_id}/stop")


JOINS = {
    # A table joined with itself: each block with its parent.
    "self": 'SELECT c.block_num FROM "test/joins".blocks c '
    'JOIN "test/joins".blocks p ON c.parent_hash = p.hash',
    # Two tables: every transaction with its block.
    "cross": 'SELECT t.block_num, t.tx_hash FROM "test/joins".blocks b '
    'JOIN "test/joins".transactions t ON b.hash = t.block_hash',
    # A semi join: the blocks with logs.
    "semi": 'SELECT block_num FROM "test/joins".blocks '
    'WHERE hash IN (SELECT block_hash FROM "test/joins".logs)',
    # Two joins in top-level UNION ALL branches: each takes the rule for its own readings.
    "union": 'SELECT c.block_num FROM "test/joins".blocks c '
    'JOIN "test/joins".blocks p ON c.parent_hash = p.hash UNION ALL '
    'SELECT t.block_num FROM "test/joins".blocks b '
    'JOIN "test/joins".transactions t ON b.hash = t.block_hash',
}


def test_streaming_joins_send_every_joined_row_once(env: dict) -> None:
    """Inner and semi joins stream (Amp's streaming-joins doc), alone and as UNION ALL
    branches: over the backfill and the microbatches that follow, each query receives
    exactly the rows the same query gives as a batch query at the end, each once, in Amp's
    protocol."""
    cluster, anvil = env["cluster"], env["anvil"]
    cluster.register(
        name="joins", manifest={"kind": "evm-rpc", "network": "anvil", "start_block": 0}
    )
    ensure_a_worker(cluster)
    job_id = cluster.deploy({"end_block": None}, ref="test/joins/versions/1.0.0")
    head = anvil.block_number()
    cluster.wait_until(caught_up_to(env, "joins", head), what="the joins job caught up")
    streams = {name: StreamReader(env, sql) for name, sql in JOINS.items()}

    def batch(name: str) -> list[int]:
        return sorted(row["block_num"] for row in lines(post(env, JOINS[name])))

    try:
        new_head = head
        for _ in range(3):  # new blocks with transactions and logs, committed one by one
            new_head = fill_chain(anvil, 2, txs_per_block=2)
            cluster.wait_until(caught_up_to(env, "joins", new_head), what="the new blocks")
        expected = {name: batch(name) for name in JOINS}
        assert expected["self"] == list(range(1, new_head + 1))
        assert max(expected["cross"]) == new_head and max(expected["semi"]) == new_head
        assert expected["union"] == sorted(expected["self"] + expected["cross"])
        for name, stream in streams.items():
            cluster.wait_until(
                lambda s=stream, n=name: (
                    sorted(s.received) == expected[n] and s.ended() or bool(s.errors)
                ),
                timeout=30,
                what=f"the {name} join's stream",
            )
        time.sleep(1.0)  # time for a row sent twice to arrive
    finally:
        for stream in streams.values():
            stream.close()
    for name, stream in streams.items():
        assert not stream.errors, (name, stream.errors)
        assert sorted(stream.received) == expected[name], name  # each row once
        assert_amp_microbatches(stream.chunks, anvil)
        assert sum(1 for _, meta in stream.chunks if meta and meta["ranges_complete"]) > 1
    client = flight.connect(f"grpc://127.0.0.1:{env['port']}")
    for sql, expected_error in (
        (JOINS["cross"].replace("JOIN", "LEFT JOIN"), "non-incremental operation: Join(Left)"),
        (
            f"SELECT block_num FROM ({JOINS['self']} UNION ALL "
            'SELECT block_num FROM "test/joins".logs) u',
            "only as top-level UNION ALL branches",
        ),
    ):
        with pytest.raises(pa.ArrowInvalid, match=re.escape(expected_error)):
            client.get_flight_info(
                flight.FlightDescriptor.for_command((sql + " SETTINGS stream = true").encode())
            )
    with cluster.api() as api:
        api.put(f"/jobs/{job_id}/stop")


def caught_up_to(env: dict, name: str, block: int):  # noqa: ANN201
    sql = f'SELECT max(block_num) AS m FROM "test/{name}".blocks'
    return lambda: lines(post(env, sql))[0]["m"] == block


def test_a_reorg_reaches_a_stream_as_ranges_it_already_had(env: dict) -> None:
    """docs/reorgs.md: after a reorg the stream sends the replaced blocks again, in a
    microbatch whose range starts at or before the end of one already sent and carries the
    new chain's hashes; the client invalidates what it had from there."""
    cluster, anvil = env["cluster"], env["anvil"]
    start = anvil.block_number() - 10
    fill_chain(anvil, 4, txs_per_block=1)  # blocks with transactions: mined again, they differ
    cluster.register(
        name="forked", manifest={"kind": "evm-rpc", "network": "anvil", "start_block": start}
    )
    ensure_a_worker(cluster)
    job_id = cluster.deploy({"end_block": None}, ref="test/forked/versions/1.0.0")
    head = anvil.block_number()
    cluster.wait_until(caught_up_to(env, "forked", head), what="the job caught up")
    stream = StreamReader(env, 'SELECT block_num, hash FROM "test/forked".blocks')
    try:
        cluster.wait_until(
            lambda: stream.past(head),
            what="the backfill",
        )
        sent_before = len(stream.chunks)
        replaced = anvil.block(head - 2, False)["hash"]
        anvil.rpc("anvil_reorg", 3, [])  # the last 3 blocks mined again
        assert anvil.block(head - 2, False)["hash"] != replaced
        new_head = anvil.mine(1)
        cluster.wait_until(
            lambda: stream.past(new_head),
            timeout=60,
            what="the new chain streamed",
        )
        cluster.wait_until(
            stream.ended,
            what="the microbatch ended",
        )
    finally:
        stream.close()
    assert not stream.errors, stream.errors
    before = [meta for _, meta in stream.chunks[:sent_before] if meta and meta["ranges_complete"]]
    after = [meta for _, meta in stream.chunks[sent_before:] if meta and meta["ranges_complete"]]
    sent_to = max(m["ranges"][0]["numbers"]["end"] for m in before)
    assert sent_to == head
    first_again = after[0]["ranges"][0]
    assert first_again["numbers"]["start"] <= sent_to, "the replaced blocks are sent again"
    for meta in after:
        end = meta["ranges"][0]["numbers"]["end"]
        assert meta["ranges"][0]["hash"] == anvil.block(end, False)["hash"], "the new chain's"
    # What a client keeps (each block's latest row) is the canonical chain.
    latest = dict(zip(stream.received, range(len(stream.received)), strict=False))
    assert sorted(latest) == list(range(start, new_head + 1))
    assert_amp_microbatches([(rows, meta) for rows, meta in stream.chunks[sent_before:]], anvil)
    with cluster.api() as api:
        api.put(f"/jobs/{job_id}/stop")


def test_memory_limit_fails_the_query_with_a_clear_error(env: dict) -> None:
    server, url, _ = env["cluster"].start_server(
        "small-server", env={"AMP_CONFIG_QUERY_MAX_MEM_MB": "1"}
    )
    try:
        # Sorting every log with its data needs far more than 1 MiB of memory.
        response = httpx.post(
            url, content='SELECT * FROM "test/chain".logs ORDER BY data, tx_hash', timeout=120
        )
        assert response.status_code == 500, response.text[:300]
        body = response.json()
        assert body["error_code"] == "QUERY_FAILED"
        assert "query_max_mem_mb" in body["error_message"]
        small = httpx.post(url, content='SELECT count(*) AS n FROM "test/chain".blocks', timeout=60)
        assert small.status_code == 200, "the server keeps serving"
    finally:
        server.stop()


def test_max_mem_mb_bounds_the_queries_running_at_once(env: dict) -> None:
    """Pools of 40 MB in a budget of 64: while one query streams, another waits for it, and
    starts once the first one's client goes away."""
    server, url, _ = env["cluster"].start_server(
        "budget-server",
        env={
            "AMP_CONFIG_MAX_MEM_MB": "64",
            "AMP_CONFIG_QUERY_MAX_MEM_MB": "40",
            "AMP_CONFIG_QUERY_TIMEOUT_SECS": "0",
        },
    )
    big = 'SELECT a.*, x.value FROM "test/chain".logs a, generate_series(1, 100000) x'
    small = 'SELECT count(*) AS n FROM "test/chain".blocks'
    try:
        with httpx.Client(timeout=120) as client, client.stream("POST", url, content=big) as held:
            assert held.status_code == 200
            rows = held.iter_lines()  # kept: a dropped iterator closes the response
            first = json.loads(next(rows))  # the first query runs, and holds 40 of the 64 MB
            assert "error_code" not in first, first
            answers: dict[str, httpx.Response] = {}
            waiting = threading.Thread(
                target=lambda: answers.setdefault(
                    "small", httpx.post(url, content=small, timeout=120)
                )
            )
            waiting.start()
            waiting.join(1.5)
            assert "small" not in answers, "the second query ran next to the first"
        # The first client is gone: its query is cancelled and its pool given back.
        waiting.join(60)
        assert answers["small"].status_code == 200, answers["small"].text
        assert lines(answers["small"])[0]["n"] > 0
    finally:
        server.stop()


def test_service_flags_select_the_endpoints(env: dict) -> None:
    from support.procs import AMPD, Proc

    cluster = env["cluster"]
    ports = {"AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0", "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0"}
    only_jsonl = Proc(
        [AMPD, "--config", str(cluster.config_path), "server", "--jsonl-server"],
        cluster.root / "only-jsonl.log",
        env=ports,
    )
    only_flight = Proc(
        [AMPD, "--config", str(cluster.config_path), "server"],
        cluster.root / "only-flight.log",
        env={**ports, "AMP_FLIGHT_SERVER": "true"},
    )
    try:
        only_jsonl.wait_for_log(r"JSON Lines server listening")
        only_flight.wait_for_log(r"Flight server listening")
        time.sleep(0.5)
        assert "Flight server listening" not in only_jsonl.log()
        assert "JSON Lines server listening" not in only_flight.log()
    finally:
        only_jsonl.stop()
        only_flight.stop()
    assert only_jsonl.popen.returncode == 0 and only_flight.popen.returncode == 0


def test_an_idle_stream_gets_keep_alives(env: dict) -> None:
    # Nothing new is committed to test/chain: after what is there, the stream only waits.
    # Every keep_alive_interval (Amp's floor: 30 s) an empty batch repeats the last
    # watermark, which Amp's client takes as nothing new, and the stream stays open.
    sql = 'SELECT block_num FROM "test/chain".blocks WHERE block_num <= 3'
    stream = StreamReader(env, sql)
    try:
        cluster = env["cluster"]
        cluster.wait_until(lambda: stream.ended() or stream.errors, what="the committed rows")
        ended_at = time.monotonic()
        settled = len(stream.chunks)
        cluster.wait_until(
            lambda: len(stream.chunks) > settled or stream.errors,
            timeout=60,
            what="a keep-alive",
        )
        waited = time.monotonic() - ended_at
    finally:
        stream.close()
    assert not stream.errors, stream.errors
    assert 29 <= waited < 45, waited
    rows, meta = stream.chunks[settled]
    assert rows == [] and meta is not None and meta["ranges_complete"] is True
    assert meta["ranges"] == stream.chunks[settled - 1][1]["ranges"]  # the same watermark
    received = stream.received
    assert len(received) == len(set(received)) and max(received) == 3  # nothing sent twice
    assert_amp_microbatches(stream.chunks, env["anvil"])
