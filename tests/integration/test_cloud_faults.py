"""The object store under faults: moto's S3 server behind a proxy that answers 500s, 503
SlowDown, resets connections and stalls requests past the client's timeout, in single puts,
multipart part uploads and CompleteMultipartUpload. Every put still lands whole, and
`ampd dump` through the faulty store writes exactly what a clean run writes."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.cloud import UPLOAD_CHUNK_BYTES, CloudStore, open_cloud_store
from ampd.storage.file_metadata import read_footer
from support.anvil import Anvil
from support.cluster import fill_chain, fill_chain_with_calldata
from support.dumps import DATASET, NAMESPACE, dump_command, write_inputs
from support.procs import run
from support.s3 import S3Endpoint, moto_s3
from support.s3_faults import S3Fault, S3FaultProxy

pytestmark = [pytest.mark.timeout(300)]

# A stall lasts far longer than the client's timeout, so only a retry can finish the put.
CLIENT_TIMEOUT = "5s"
STALL_SECS = 60.0


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def proxy(s3: S3Endpoint) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3.url) as p:
        yield p


def new_bucket(s3: S3Endpoint) -> str:
    name = f"amp-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(name)
    return name


@pytest.fixture
def store(
    s3: S3Endpoint, proxy: S3FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CloudStore:
    for name, value in proxy.env(s3.env).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_TIMEOUT", CLIENT_TIMEOUT)  # object_store's own key
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    return open_cloud_store(f"s3://{new_bucket(s3)}/faults")


async def put_bytes(store: CloudStore, key: str, data: bytes) -> None:
    staging = store.new_staging_file(".bin")
    staging.path.write_bytes(data)
    staging.release()
    assert await store.put_file(staging.path, key) == len(data)


def read_back(store: CloudStore, key: str) -> bytes:
    with store.open(key) as f:
        return f.read()


FAULTS = ["http_500", "slow_down", "reset", "stall"]
PARTS = 3
MULTIPART = 2 * UPLOAD_CHUNK_BYTES + 4321  # three parts


@pytest.mark.parametrize("kind", FAULTS)
async def test_a_small_put_is_retried_through(
    store: CloudStore, proxy: S3FaultProxy, kind: str
) -> None:
    proxy.set_faults(S3Fault(kind, request="put", nth=1, delay=STALL_SECS))
    data = os.urandom(1000)
    await put_bytes(store, "small/object", data)
    assert proxy.injected == {kind: 1}
    assert proxy.requests["put"] == 2  # the one that failed, and its retry
    assert read_back(store, "small/object") == data


@pytest.mark.parametrize("request_kind", ["create_multipart", "upload_part", "complete_multipart"])
@pytest.mark.parametrize("kind", FAULTS)
async def test_a_multipart_upload_survives_a_fault_mid_upload(
    store: CloudStore, proxy: S3FaultProxy, kind: str, request_kind: str
) -> None:
    nth = 2 if request_kind == "upload_part" else 1  # a part after the upload began
    proxy.set_faults(S3Fault(kind, request=request_kind, nth=nth, delay=STALL_SECS))
    data = os.urandom(MULTIPART)
    await put_bytes(store, "big/object", data)
    assert proxy.injected == {kind: 1}
    expected = {"create_multipart": 1, "upload_part": PARTS, "complete_multipart": 1}
    expected[request_kind] += 1
    assert {k: proxy.requests[k] for k in expected} == expected
    assert proxy.requests["put"] == 0  # it really went in parts
    assert read_back(store, "big/object") == data
    assert await store.size("big/object") == len(data)


async def test_puts_survive_faults_at_random(store: CloudStore, proxy: S3FaultProxy) -> None:
    rng = random.Random(20240601)  # replayable: the same draws on every run
    proxy.set_faults(
        S3Fault("http_500", probability=0.1, rng=rng),
        S3Fault("slow_down", probability=0.1, rng=rng),
        S3Fault("reset", probability=0.1, rng=rng),
    )
    payloads = {f"mixed/{i}": os.urandom(MULTIPART if i % 2 else 5000) for i in range(6)}
    for key, data in payloads.items():
        await put_bytes(store, key, data)
    proxy.set_faults()
    for key, data in payloads.items():
        assert read_back(store, key) == data
    injected = proxy.injected
    assert sum(injected.values()) >= 4, injected  # the draws for the first 18 requests fire 4


# --- ampd dump through the faulty store ---


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, int]]:
    """Blocks with logs, then blocks whose calldata makes the transactions file ~11 MB."""
    with Anvil(hardfork="cancun") as anvil:
        fill_chain(anvil, 20, txs_per_block=4)
        yield anvil, fill_chain_with_calldata(anvil, 16)


def dump_to(tmp_path: Path, anvil: Anvil, head: int, data_dir: str, env: dict[str, str]) -> dict:
    inputs = write_inputs(tmp_path / "inputs", anvil.url)
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    (home / "tmp").mkdir(parents=True)
    command = dump_command(inputs, data_dir, 0, head, "--processes", "0")  # type: ignore[arg-type]
    result = run(command, env={**env, "TMPDIR": str(home / "tmp")}, timeout=240)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_output(s3: S3Endpoint, bucket: str) -> dict[str, tuple[list, pa.Table]]:
    """Each table's files (as their block ranges, in order) and rows, read straight from moto."""
    client = s3.client()
    out = {}
    keys = s3.keys(bucket)
    for table in TABLES:
        mine = sorted(k for k in keys if f"/{NAMESPACE}/{DATASET}/{table}/" in k)
        ranges, parts = [], []
        for key in mine:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            meta, rows = read_footer(pa.BufferReader(body))
            parts.append(pq.read_table(pa.BufferReader(body)).replace_schema_metadata(None))
            assert parts[-1].num_rows == rows
            ranges.append([(r.start, r.end, r.hash) for r in meta.ranges])
        out[table] = (ranges, pa.concat_tables(parts))
    return out


def test_dump_through_a_faulty_store_writes_what_a_clean_run_writes(
    tmp_path: Path, chain: tuple[Anvil, int], s3: S3Endpoint, proxy: S3FaultProxy
) -> None:
    anvil, head = chain
    clean_bucket, faulty_bucket = new_bucket(s3), new_bucket(s3)
    clean = dump_to(tmp_path, anvil, head, f"s3://{clean_bucket}/out", s3.env)

    proxy.set_faults(
        S3Fault("reset", request="list", nth=1),  # the start-up check
        S3Fault("http_500", request="put", nth=1),
        S3Fault("slow_down", request="put", nth=2),
        S3Fault("http_500", request="create_multipart", nth=1),
        S3Fault("slow_down", request="upload_part", nth=1),
        S3Fault("reset", request="upload_part", nth=2),
        S3Fault("stall", request="upload_part", nth=3, delay=STALL_SECS),
        S3Fault("reset", request="complete_multipart", nth=1),
        S3Fault("stall", request="complete_multipart", nth=2, delay=STALL_SECS),
    )
    env = {**proxy.env(s3.env), "AWS_TIMEOUT": CLIENT_TIMEOUT}
    faulty = dump_to(tmp_path, anvil, head, f"s3://{faulty_bucket}/out", env)
    assert proxy.injected == {"reset": 3, "http_500": 2, "slow_down": 2, "stall": 2}
    assert proxy.requests["upload_part"] >= 2 + 3, "the transactions file was not multipart"

    assert faulty["complete"] and faulty["rows"] == clean["rows"]
    assert faulty["files"] == clean["files"]
    want, got = read_output(s3, clean_bucket), read_output(s3, faulty_bucket)
    for table in TABLES:
        assert got[table][0] == want[table][0], f"{table}: other files or block ranges"
        assert got[table][1].equals(want[table][1]), f"{table}: other rows"
    assert want["transactions"][1].num_rows > 0 and want["logs"][1].num_rows > 0
    # One object per file, and no upload left open: every retried part went into its upload.
    assert len(s3.keys(faulty_bucket)) == faulty["files"]
    assert s3.client().list_multipart_uploads(Bucket=faulty_bucket).get("Uploads", []) == []
