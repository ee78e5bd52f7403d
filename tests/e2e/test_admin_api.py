"""The Admin API of a real controller process: success shapes, every bad input gives a 4xx
in the error format and writes nothing, and the bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(180)]
MANIFEST = {"kind": "evm-rpc", "network": "anvil", "start_block": 0}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres
) -> Iterator[Cluster]:
    with Anvil() as anvil:
        anvil.mine(20)
        url = create_database(pg_cluster)
        made = Cluster(tmp_path_factory.mktemp("admin"), url, anvil)
        made.start_controller()
        made.register()
        yield made
        made.stop_all()
        drop_database(pg_cluster, url)


def snapshot(cluster: Cluster) -> tuple:
    with psycopg.connect(cluster.db_url) as conn:
        counts = tuple(
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in (
                "manifests",
                "datasets",
                "dataset_versions",
                "dataset_tags",
                "jobs",
                "segments",
                "job_events",
            )
        )
    providers = sorted(p.name for p in (cluster.root / "providers").iterdir())
    return counts, providers


BAD_REQUESTS = [
    # (method, path, body (bytes | json object | None), status, error_code)
    ("POST", "/datasets", b"{not json", 400, "INVALID_PAYLOAD_FORMAT"),
    ("POST", "/datasets", b"", 400, "INVALID_PAYLOAD_FORMAT"),
    ("POST", "/datasets", [1, 2], 400, "INVALID_PAYLOAD_FORMAT"),
    ("POST", "/datasets", {"name": "x", "manifest": MANIFEST}, 400, "INVALID_PAYLOAD_FORMAT"),
    (
        "POST",
        "/datasets",
        {"namespace": 5, "name": "x", "manifest": MANIFEST},
        400,
        "INVALID_PAYLOAD_FORMAT",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "Bad-NS", "name": "x", "manifest": MANIFEST},
        400,
        "INVALID_PATH",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "9lives", "manifest": MANIFEST},
        400,
        "INVALID_PATH",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": {"kind": "solana"}},
        400,
        "INVALID_MANIFEST",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": {"network": "anvil"}},
        400,
        "INVALID_MANIFEST",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": {"kind": "evm-rpc"}},
        400,
        "MANIFEST_VALIDATION_ERROR",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": {**MANIFEST, "start_block": -1}},
        400,
        "MANIFEST_VALIDATION_ERROR",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": {**MANIFEST, "start_block": "zero"}},
        400,
        "MANIFEST_VALIDATION_ERROR",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "version": "1.0", "manifest": MANIFEST},
        400,
        "INVALID_BODY",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": "abc"},
        400,
        "INVALID_MANIFEST",
    ),
    (
        "POST",
        "/datasets",
        {"namespace": "ns", "name": "x", "manifest": "0" * 64},
        404,
        "MANIFEST_NOT_FOUND",
    ),
    ("POST", "/manifests", b"nope", 400, "INVALID_PAYLOAD_FORMAT"),
    ("POST", "/manifests", {"kind": "unknown"}, 400, "INVALID_MANIFEST"),
    ("POST", "/manifests", {"kind": "evm-rpc", "network": ""}, 400, "MANIFEST_VALIDATION_ERROR"),
    ("GET", "/manifests/xyz", None, 400, "INVALID_PATH"),
    ("GET", "/manifests/" + "a" * 64, None, 404, "MANIFEST_NOT_FOUND"),
    ("GET", "/datasets/BAD/chain/versions", None, 400, "INVALID_PATH"),
    ("GET", "/datasets/test/nope/versions", None, 404, "DATASET_NOT_FOUND"),
    ("GET", "/datasets/test/chain/versions/not-a-rev", None, 400, "INVALID_PATH"),
    ("GET", "/datasets/test/chain/versions/9.9.9", None, 404, "DATASET_NOT_FOUND"),
    ("GET", "/datasets/test/chain/versions/9.9.9/manifest", None, 404, "DATASET_NOT_FOUND"),
    ("POST", "/datasets/test/chain/versions/1.0.0/deploy", b"", 400, "INVALID_BODY"),
    ("POST", "/datasets/test/chain/versions/1.0.0/deploy", b"{", 400, "INVALID_BODY"),
    ("POST", "/datasets/test/chain/versions/1.0.0/deploy", [], 400, "INVALID_BODY"),
    ("POST", "/datasets/test/chain/versions/1.0.0/deploy", {"end_block": 5}, 400, "INVALID_BODY"),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"end_block": "soon"},
        400,
        "INVALID_BODY",
    ),
    ("POST", "/datasets/test/chain/versions/1.0.0/deploy", {"parallelism": 0}, 400, "INVALID_BODY"),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"parallelism": "2"},
        400,
        "INVALID_BODY",
    ),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"worker_id": "9-bad"},
        400,
        "INVALID_BODY",
    ),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"worker_id": "nobody"},
        400,
        "WORKER_NOT_AVAILABLE",
    ),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"depends_on": [-1]},
        400,
        "INVALID_BODY",
    ),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"depends_on": [424242]},
        400,
        "INVALID_BODY",
    ),
    ("POST", "/datasets/test/chain/versions/1.0.0/deploy", {"colour": "red"}, 400, "INVALID_BODY"),
    (
        "POST",
        "/datasets/test/chain/versions/1.0.0/deploy",
        {"end_block": "-1000000"},
        400,
        "INVALID_BODY",
    ),
    ("POST", "/datasets/test/nope/versions/latest/deploy", {}, 404, "DATASET_NOT_FOUND"),
    ("POST", "/datasets/Bad/chain/versions/latest/deploy", {}, 400, "INVALID_PATH"),
    ("DELETE", "/datasets/Bad/chain", None, 400, "INVALID_PATH"),
    ("GET", "/jobs/abc", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/-1", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/0", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/99999999999999999999", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/4242", None, 404, "JOB_NOT_FOUND"),
    ("PUT", "/jobs/abc/stop", None, 400, "INVALID_JOB_ID"),
    ("PUT", "/jobs/4242/stop", None, 404, "JOB_NOT_FOUND"),
    ("DELETE", "/jobs/x1", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/abc/progress", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/abc/events", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs/abc/segments", None, 400, "INVALID_JOB_ID"),
    ("GET", "/jobs?limit=0", None, 400, "LIMIT_INVALID"),
    ("GET", "/jobs?limit=1001", None, 400, "LIMIT_TOO_LARGE"),
    ("GET", "/jobs?limit=ten", None, 400, "INVALID_QUERY_PARAMETERS"),
    ("GET", "/jobs?last_job_id=-3", None, 400, "INVALID_QUERY_PARAMETERS"),
    ("GET", "/jobs?status=DANCING", None, 400, "INVALID_QUERY_PARAMETERS"),
    ("DELETE", "/jobs", None, 400, "INVALID_QUERY_PARAM"),
    ("DELETE", "/jobs?status=everything", None, 400, "INVALID_QUERY_PARAM"),
    ("POST", "/providers", b"{{", 400, "INVALID_REQUEST_BODY"),
    ("POST", "/providers", {"kind": "evm-rpc"}, 400, "INVALID_REQUEST_BODY"),
    (
        "POST",
        "/providers",
        {"name": "Bad-Name", "kind": "evm-rpc", "network": "x", "url": "http://a"},
        400,
        "INVALID_REQUEST_BODY",
    ),
    (
        "POST",
        "/providers",
        {"name": "p", "kind": "solana", "network": "x", "url": "http://a"},
        400,
        "INVALID_REQUEST_BODY",
    ),
    (
        "POST",
        "/providers",
        {"name": "p", "kind": "evm-rpc", "network": "x", "url": "ftp://a"},
        400,
        "INVALID_REQUEST_BODY",
    ),
    (
        "POST",
        "/providers",
        {
            "name": "p",
            "kind": "evm-rpc",
            "network": "x",
            "url": "http://a",
            "concurrent_request_limit": "x",
        },
        400,
        "INVALID_REQUEST_BODY",
    ),
    ("GET", "/providers/Bad-Name", None, 400, "INVALID_PROVIDER_NAME"),
    ("GET", "/providers/missing", None, 404, "PROVIDER_NOT_FOUND"),
    ("DELETE", "/providers/Bad-Name", None, 400, "INVALID_PROVIDER_NAME"),
    ("GET", "/workers/9bad", None, 400, "INVALID_WORKER_ID"),
    ("GET", "/workers/nobody", None, 404, "WORKER_NOT_FOUND"),
    ("GET", "/files/abc", None, 400, "INVALID_FILE_ID"),
    ("GET", "/files/777", None, 404, "FILE_NOT_FOUND"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_in_the_error_format_and_writes_nothing(
    cluster: Cluster,
    method: str,
    path: str,
    body,
    status: int,
    code: str,  # noqa: ANN001
) -> None:
    before = snapshot(cluster)
    with cluster.api() as api:
        if isinstance(body, bytes):
            response = api.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
        elif body is None:
            response = api.request(method, path)
        else:
            response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error_code", "error_message"}
    assert payload["error_code"] == code, payload
    assert payload["error_message"]
    assert snapshot(cluster) == before, "a rejected request changed the database or the providers"


def test_happy_paths_and_shapes(cluster: Cluster) -> None:
    with cluster.api() as api:
        assert api.get("/healthz").status_code == 200
        assert api.get("/openapi.json").json()["info"]["title"] == "ampd Admin API"
        created = api.post(
            "/providers",
            json={"name": "extra", "kind": "evm-rpc", "network": "anvil", "url": "${NODE_URL}"},
        )
        assert created.status_code == 201
        assert api.get("/providers/extra").json()["url"] == "${NODE_URL}"
        assert api.delete("/providers/extra").status_code == 204
        assert api.delete("/providers/extra").status_code == 204
        firehose = {"kind": "firehose", "network": "mainnet", "url": "https://fh.example:443"}
        created = api.post("/providers", json={"name": "fh", **firehose, "token": "${FH_TOKEN}"})
        assert created.status_code == 201, created.text
        assert api.get("/providers/fh").json() == {"name": "fh", **firehose, "token": "${FH_TOKEN}"}
        # A file of a kind ampd does not know (another program's) is left out of the list.
        (cluster.root / "providers" / "other.toml").write_text('kind = "solana"\nnetwork = "x"\n')
        listed = api.get("/providers")
        assert listed.status_code == 200
        assert sorted(p["name"] for p in listed.json()["providers"]) == ["anvil", "fh"]
        other = api.get("/providers/other")
        assert other.status_code == 404 and "not a kind ampd knows" in other.text
        assert api.delete("/providers/fh").status_code == 204
        (cluster.root / "providers" / "other.toml").unlink()
        datasets = api.get("/datasets").json()["datasets"]
        assert {
            "namespace": "test",
            "name": "chain",
            "latest_version": "1.0.0",
            "versions": ["1.0.0"],
        } in datasets
        versions = api.get("/datasets/test/chain/versions").json()
        assert versions["special_tags"]["latest"] == versions["versions"][0]["manifest_hash"]
        assert versions["versions"][0]["created_at"].endswith("+00:00")
        inspect = api.get("/datasets/test/chain/versions/latest").json()
        assert inspect["tables"] == ["blocks", "logs", "transactions"]
        assert api.get("/datasets/test/chain/versions/dev/manifest").json()["kind"] == "evm-rpc"
        stored = api.post("/manifests", json=MANIFEST)
        assert stored.status_code == 201 and stored.json()["hash"] == inspect["manifest_hash"]
        jobs = api.get("/jobs?status=all").json()
        assert "jobs" in jobs
        assert api.get("/workers").json() == {"workers": []}
        assert api.delete("/jobs?status=terminal").status_code == 204
        assert api.delete("/jobs/4242").status_code == 204  # missing: nothing to do


def test_deploy_is_idempotent_and_conflicts_on_other_parameters(cluster: Cluster) -> None:
    with cluster.api() as api:
        api.post(
            "/datasets",
            json={"namespace": "test", "name": "idem", "manifest": {**MANIFEST, "start_block": 1}},
        )
        first = api.post("/datasets/test/idem/versions/dev/deploy", json={"end_block": "10"})
        again = api.post("/datasets/test/idem/versions/dev/deploy", json={"end_block": "10"})
        other = api.post("/datasets/test/idem/versions/dev/deploy", json={"end_block": "12"})
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        assert other.status_code == 409 and other.json()["error_code"] == "ACTIVE_JOB_CONFLICT"
        job_id = first.json()["job_id"]
        assert api.delete(f"/jobs/{job_id}").json()["error_code"] == "JOB_CONFLICT"
        assert api.put(f"/jobs/{job_id}/stop").status_code == 200
        events = api.get(f"/jobs/{job_id}/events").json()["events"]
        assert [e["event_type"] for e in events][:2] == ["SCHEDULED", "STOP_REQUESTED"]


def test_token_is_required_when_configured(tmp_path: Path, pg_cluster: ManagedPostgres) -> None:
    with Anvil() as anvil:
        url = create_database(pg_cluster)
        secured = Cluster(tmp_path / "secured", url, anvil, {"admin_api_token": "s3cret"})
        try:
            secured.start_controller()
            assert httpx.get(f"{secured.admin_url}/healthz").status_code == 200
            denied = httpx.get(f"{secured.admin_url}/datasets")
            assert denied.status_code == 401 and denied.json()["error_code"] == "UNAUTHORIZED"
            wrong = httpx.get(
                f"{secured.admin_url}/datasets", headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            ok = httpx.get(
                f"{secured.admin_url}/datasets", headers={"Authorization": "Bearer s3cret"}
            )
            assert ok.status_code == 200
        finally:
            secured.stop_all()
            drop_database(pg_cluster, url)


def test_manifests_dir_is_registered_at_start(tmp_path: Path, pg_cluster: ManagedPostgres) -> None:
    with Anvil() as anvil:
        url = create_database(pg_cluster)
        cluster = Cluster(tmp_path / "manifests", url, anvil)
        folder = cluster.root / "manifests"
        folder.mkdir()
        (folder / "tokens.json").write_text(
            '{"kind": "evm-rpc", "network": "anvil", "start_block": 7}'
        )
        (folder / "broken.json").write_text('{"kind": "evm-rpc"}')
        try:
            controller = cluster.start_controller()
            with cluster.api() as api:
                names = [
                    (d["namespace"], d["name"]) for d in api.get("/datasets").json()["datasets"]
                ]
                revision = api.get("/datasets/_/tokens/versions/dev").json()
            assert names == [("_", "tokens")]
            assert revision["start_block"] == 7
            assert (
                "skipping manifest file" in controller.log() and "broken.json" in controller.log()
            )
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, url)
