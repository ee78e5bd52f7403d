"""The object-store contract, on the local store and on real endpoints for each cloud: moto's
S3 server, Azurite (Azure Blob) and fake-gcs-server (GCS, see `support/gcs.py`): put,
multipart, ranged reads, list, delete, missing objects, overwrite, Parquet round trip, and
the start-up check on a missing bucket or refused credentials."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ampd.storage.cloud import UPLOAD_CHUNK_BYTES, open_cloud_store
from ampd.storage.store import LocalStore, ObjectNotFound, ObjectStore, StoreUnavailable
from support.azurite import AzuriteEndpoint, azurite
from support.clouds import SCHEMES, new_bucket
from support.gcs import GCSEndpoint, fake_gcs
from support.s3 import S3Endpoint, moto_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def az() -> Iterator[AzuriteEndpoint]:
    with azurite() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def gs() -> Iterator[GCSEndpoint]:
    with fake_gcs() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", *SCHEMES])
def store(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:  # noqa: ANN001
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    bucket = new_bucket(request.getfixturevalue(request.param), monkeypatch)
    return open_cloud_store(f"{request.param}://{bucket}/some/prefix")


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
    assert url.startswith(("file://", "s3://", "az://", "gs://")) and store.url() in url


@pytest.mark.parametrize(
    ("scheme", "marker"),
    [
        ("s3", "NoSuchBucket"),
        ("az", "ContainerNotFound"),
        ("gs", "NoSuchBucket"),
    ],
)
async def test_check_names_a_missing_bucket(
    request: pytest.FixtureRequest, scheme: str, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_bucket(request.getfixturevalue(scheme), monkeypatch)  # the endpoint is up and set
    missing = f"{scheme}://no-such-{uuid.uuid4().hex[:8]}/amp"
    with pytest.raises(StoreUnavailable, match=f"data_dir {missing}: {marker}"):
        await open_cloud_store(missing).check()


async def test_check_names_refused_azure_credentials(
    az: AzuriteEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(az, monkeypatch)
    await open_cloud_store(f"az://{bucket}").check()
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "bm90IHRoZSBhY2NvdW50IGtleQ==")
    with pytest.raises(StoreUnavailable, match=f"data_dir az://{bucket}: AuthorizationFailure"):
        await open_cloud_store(f"az://{bucket}").check()


def test_fake_gcs_server_alone_answers_a_missing_bucket_with_500(gs: GCSEndpoint) -> None:
    """Why the adapter answers a missing bucket's listing with GCS's 404 NoSuchBucket
    (object_store retries a 500 until its retry limit); when this fails, the emulator
    answers as GCS does and that part of the adapter can go."""
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    direct = httpx.get(f"{gs.emulator_url}/{missing}", params={"list-type": "2"})
    assert direct.status_code == 500 and "no bucket named" in direct.text
    adapted = httpx.get(f"{gs.url}/{missing}", params={"list-type": "2"})
    assert adapted.status_code == 404 and "<Code>NoSuchBucket</Code>" in adapted.text


def test_fake_gcs_server_alone_refuses_object_store_writes(
    gs: GCSEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why `support/gcs.py` puts an adapter in front of the emulator; when this fails, the
    emulator has learnt the XML upload API and the adapter can go."""
    import obstore
    from obstore.store import GCSStore

    from support.gcs import service_account

    bucket = new_bucket(gs)
    direct = service_account(gs.service_account_path.with_name("direct.json"), gs.emulator_url)
    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT_PATH", str(direct))
    with pytest.raises(Exception, match="invalid uploadType"):
        obstore.put(GCSStore(bucket, retry_config={"max_retries": 0}), "k", b"v")


@pytest.mark.parametrize(
    ("content", "marker"),
    [(None, "Unable to open service account file"), ("{not json", "Unable to decode")],
    ids=["missing-file", "not-a-service-account"],
)
def test_refused_gcs_credentials_are_one_line_naming_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, marker: str
) -> None:
    """The library refuses a bad service account before any request: no endpoint needed."""
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT_PATH", str(path))
    with pytest.raises(ValueError) as refused:
        open_cloud_store("gs://amp-data/prefix")
    message = str(refused.value)
    assert message.startswith("'gs://amp-data/prefix': ") and marker in message, message
    assert "\n" not in message and "Debug source" not in message, message
