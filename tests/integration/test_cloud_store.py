"""The object-store contract, on the local store and on a real S3 endpoint (moto's server):
put, multipart, ranged reads, list, delete, missing objects, overwrite, Parquet round trip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ampd.storage.cloud import UPLOAD_CHUNK_BYTES, open_cloud_store
from ampd.storage.store import LocalStore, ObjectNotFound, ObjectStore
from support.s3 import S3Endpoint, moto_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:  # noqa: ANN001
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    for name, value in endpoint.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    endpoint.create_bucket(bucket)
    return open_cloud_store(f"s3://{bucket}/some/prefix")


async def put_bytes(store: ObjectStore, key: str, data: bytes) -> int:
    staging = store.new_staging_file(".bin")
    staging.path.write_bytes(data)
    staging.release()
    size = await store.put_file(staging.path, key)
    assert not staging.path.exists()  # the local file is consumed
    return size


async def test_put_get_size_exists(store: ObjectStore) -> None:
    assert await put_bytes(store, "ns/ds/t/r/a.bin", b"hello") == 5
    assert await store.exists("ns/ds/t/r/a.bin")
    assert await store.size("ns/ds/t/r/a.bin") == 5
    with store.open("ns/ds/t/r/a.bin") as f:
        assert f.read() == b"hello"


async def test_multipart_upload_and_ranged_reads(store: ObjectStore) -> None:
    data = os.urandom(2 * UPLOAD_CHUNK_BYTES + 12345)  # three parts
    assert await put_bytes(store, "big/object", data) == len(data)
    assert await store.size("big/object") == len(data)
    with store.open("big/object") as f:
        f.seek(UPLOAD_CHUNK_BYTES - 10)
        assert f.read(20) == data[UPLOAD_CHUNK_BYTES - 10 : UPLOAD_CHUNK_BYTES + 10]
        f.seek(len(data) - 5)
        assert f.read() == data[-5:]


async def test_list_by_string_prefix_sorted_without_staging(store: ObjectStore) -> None:
    for key in ["ns/ds/logs/r/2", "ns/ds/blocks/r/1", "ns/ds/blocks/r/0", "ns/other/x", "top"]:
        await put_bytes(store, key, b"ab")
    store.new_staging_file(".parquet").path.write_bytes(b"in progress")  # never listed
    assert [o.key for o in await store.list()] == [
        "ns/ds/blocks/r/0",
        "ns/ds/blocks/r/1",
        "ns/ds/logs/r/2",
        "ns/other/x",
        "top",
    ]
    assert [o.key for o in await store.list("ns/ds/blocks/")] == [
        "ns/ds/blocks/r/0",
        "ns/ds/blocks/r/1",
    ]
    assert [o.key for o in await store.list("ns/o")] == ["ns/other/x"]
    assert {o.size for o in await store.list("ns/")} == {2}


async def test_delete_is_idempotent_and_missing_objects_are_clear(store: ObjectStore) -> None:
    await put_bytes(store, "k/v", b"x")
    await store.delete("k/v")
    await store.delete("k/v")
    assert not await store.exists("k/v")
    with pytest.raises(ObjectNotFound, match="k/v"):
        await store.size("k/v")
    with pytest.raises(ObjectNotFound, match="k/v"):
        store.open("k/v")


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    await put_bytes(store, "same", b"first")
    await put_bytes(store, "same", b"second!")
    assert await store.size("same") == 7


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a"])
async def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        await store.exists(key)


async def test_parquet_round_trip_through_the_store(store: ObjectStore) -> None:
    table = pa.table({"block_num": pa.array(range(1000), pa.uint64())})
    staging = store.new_staging_file(".parquet")
    pq.write_table(table, staging.path)
    staging.release()
    await store.put_file(staging.path, "t/000000000-0000000000000000.parquet")
    with store.open("t/000000000-0000000000000000.parquet") as f:
        assert pq.read_table(f).equals(table)


async def test_urls_name_the_store(store: ObjectStore, tmp_path: Path) -> None:
    url = store.url("a/b")
    assert url.endswith("/a/b")
    assert url.startswith(("file://", "s3://")) and store.url() in url
