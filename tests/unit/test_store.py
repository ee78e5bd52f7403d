"""The local data store: keys, atomic puts, listing, and open_store's URL handling."""

import os
import time
from pathlib import Path

import pytest

from ampd.storage.paths import TableLocation, file_name, new_revision, parse_file_name
from ampd.storage.store import LocalStore, ObjectNotFound, open_store


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "data")


def staged(store, content: bytes) -> Path:
    staging = store.new_staging_file(".parquet")
    staging.path.write_bytes(content)
    staging.release()
    return staging.path


async def test_put_creates_parents_and_consumes_the_local_file(store):
    local = staged(store, b"hello")
    size = await store.put_file(local, "ns/ds/blocks/rev/000000001-00000000000000aa.parquet")
    assert size == 5
    assert not local.exists()
    key = "ns/ds/blocks/rev/000000001-00000000000000aa.parquet"
    assert await store.exists(key)
    assert await store.size(key) == 5
    assert store.local_path(key).read_bytes() == b"hello"
    with store.open(key) as f:
        assert f.read() == b"hello"


async def test_put_replaces_an_existing_object(store):
    await store.put_file(staged(store, b"one"), "a/b")
    await store.put_file(staged(store, b"second"), "a/b")
    assert await store.size("a/b") == 6


async def test_put_from_another_file_system(store, tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to copy from")
    local = shm / f"ampd-test-{os.getpid()}"
    local.write_bytes(b"x" * 1000)
    try:
        assert await store.put_file(local, "x/y/z") == 1000
        assert not local.exists()
        assert [p.name for p in store.local_path("x/y/z").parent.iterdir()] == ["z"]
    finally:
        local.unlink(missing_ok=True)


async def test_delete_is_idempotent(store):
    await store.put_file(staged(store, b"x"), "a/b")
    await store.delete("a/b")
    await store.delete("a/b")
    assert not await store.exists("a/b")


async def test_missing_object(store):
    with pytest.raises(ObjectNotFound, match="a/b"):
        await store.size("a/b")
    with pytest.raises(ObjectNotFound):
        store.open("a/b")
    assert not await store.exists("a/b")


# Listing by prefix is part of the store contract: tests/integration/test_cloud_store.py.


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../b", "a//b", "a/./b", "a/"])
async def test_invalid_keys(store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        await store.exists(key)


def test_url(store, tmp_path):
    assert store.url() == (tmp_path / "data").as_uri()
    assert store.url("a/b c") == (tmp_path / "data" / "a" / "b c").as_uri()


async def test_cleanup_staging_removes_only_abandoned_files(store):
    old = store.new_staging_file()
    old.path.write_bytes(b"old")
    old.release()  # its writer is gone
    past = time.time() - 7200
    os.utime(old.path, (past, past))
    live = store.new_staging_file()  # still held
    os.utime(live.path, (past, past))
    assert await store.cleanup_staging() == 1
    assert not old.path.exists() and live.path.exists()
    live.discard()


# -- open_store -----------------------------------------------------------------------------


def test_open_store_local_path_and_file_url(tmp_path):
    a = open_store(str(tmp_path / "d1"))
    b = open_store((tmp_path / "d 2").as_uri())
    assert isinstance(a, LocalStore) and a.root == tmp_path / "d1"
    assert isinstance(b, LocalStore) and b.root == tmp_path / "d 2"


def test_open_store_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("data")
    assert store.root == tmp_path / "data"


@pytest.mark.parametrize("url", ["s3://bucket/prefix", "gs://bucket", "az://container/a/b"])
def test_open_store_object_store_urls(url, monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "account")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    store = open_store(url)
    assert store.url() == url and store.url("k/v") == f"{url}/k/v"
    assert store.local_path("k/v") is None


@pytest.mark.parametrize("url", ["s3://", "gs:///prefix", "s3://Bad_Bucket!", "az://a b/c"])
def test_open_store_needs_a_bucket(url):
    with pytest.raises(ValueError, match="data_dir .*expected"):
        open_store(url)


def test_open_store_unknown_scheme():
    with pytest.raises(ValueError, match="unknown scheme 'ftp'.*s3://"):
        open_store("ftp://host/x")


# -- paths ----------------------------------------------------------------------------------


def test_file_name_pattern():
    assert file_name(1234, 0xABC) == "000001234-0000000000000abc.parquet"
    assert file_name(12_345_678_901, 1) == "12345678901-0000000000000001.parquet"
    a, b = file_name(7), file_name(7)
    assert a != b and parse_file_name(a) == 7
    with pytest.raises(ValueError):
        parse_file_name("7-abc.parquet")


def test_table_location_layout():
    rev = new_revision()
    loc = TableLocation("eth", "mainnet", "blocks", rev)
    assert loc.prefix == f"eth/mainnet/blocks/{rev}/"
    assert loc.key("000000000-0000000000000001.parquet").startswith(loc.prefix)


@pytest.mark.parametrize(
    "args",
    [
        ("e/th", "d", "blocks", "00000000-0000-0000-0000-000000000001"),
        ("eth", "..", "blocks", "00000000-0000-0000-0000-000000000001"),
        ("eth", "d", "", "00000000-0000-0000-0000-000000000001"),
        ("eth", "d", "blocks", "not-a-uuid"),
    ],
)
def test_table_location_rejects_bad_parts(args):
    with pytest.raises(ValueError):
        TableLocation(*args)


def test_cloud_request_policy_keeps_the_environment_client_keys():
    from ampd.storage.cloud import CLIENT_TIMEOUTS, RETRY_CONFIG, _request_policy

    policy = _request_policy("s3", {"AWS_ALLOW_HTTP": "true", "AWS_TIMEOUT": "5s", "X": "1"})
    assert policy["client_options"] == {**CLIENT_TIMEOUTS, "allow_http": "true", "timeout": "5s"}
    assert policy["retry_config"] == RETRY_CONFIG
    gcs = _request_policy("gs", {"AWS_TIMEOUT": "5s", "GOOGLE_CONNECT_TIMEOUT": "1s"})
    assert gcs["client_options"] == {**CLIENT_TIMEOUTS, "connect_timeout": "1s"}
