"""Derived datasets in a real controller's Admin API: `POST /schema` with Amp's shapes and
codes, and registering a derived manifest checks its SQL against its dependencies."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from ampd.datasets.manifest import generate_manifest, manifest_hash
from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(180)]
DEP = {"eth": "test/chain@1.0.0"}
TRANSFERS = (
    "SELECT block_num, tx_hash, evm_decode_log(topic1, topic2, topic3, data, "
    "'Transfer(address indexed from, address indexed to, uint256 value)') AS dec "
    "FROM eth.logs WHERE topic0 = evm_topic('Transfer(address,address,uint256)')"
)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres
) -> Iterator[Cluster]:
    with Anvil() as anvil:
        url = create_database(pg_cluster)
        made = Cluster(tmp_path_factory.mktemp("derived"), url, anvil)
        made.start_controller()
        made.register(manifest=generate_manifest(network="anvil"))
        yield made
        made.stop_all()
        drop_database(pg_cluster, url)


def post(cluster: Cluster, path: str, body: object) -> tuple[int, dict]:
    with cluster.api() as api:
        response = api.post(path, json=body)
    return response.status_code, response.json()


def manifests(cluster: Cluster) -> int:
    with psycopg.connect(cluster.db_url) as conn:
        return conn.execute("SELECT count(*) FROM manifests").fetchone()[0]


def test_schema_plans_tables_in_order_with_block_num_first(cluster: Cluster):
    status, body = post(
        cluster,
        "/schema",
        {
            "dependencies": DEP,
            "tables": {
                "transfers": TRANSFERS,
                "big": "SELECT block_num, dec FROM self.transfers WHERE block_num > 5",
            },
        },
    )
    assert status == 200, body
    fields = {t: s["arrow"]["fields"] for t, s in body["schemas"].items()}
    assert [f["name"] for f in fields["transfers"]] == ["_block_num", "block_num", "tx_hash", "dec"]
    assert fields["transfers"][0] == {"name": "_block_num", "type": "UInt64", "nullable": False}
    assert fields["transfers"][2]["type"] == {"FixedSizeBinary": 32}
    decoded = fields["transfers"][3]["type"]["Struct"]
    assert [f["name"] for f in decoded] == ["from", "to", "value"]
    assert fields["big"][1:] == [fields["transfers"][1], fields["transfers"][3]]  # as planned
    # Amp's published CLI reads the same schema under "schema", with the networks read.
    for table in ("transfers", "big"):
        assert body["schemas"][table]["schema"] == {"arrow": {"fields": fields[table]}}
        assert body["schemas"][table]["networks"] == ["anvil"]


def test_schema_with_only_functions_plans_nothing(cluster: Cluster):
    fn = {
        "inputTypes": ["Int64"],
        "outputType": "Int64",
        "source": {"source": "function f(x) { return x; }", "filename": "f.js"},
    }
    assert post(cluster, "/schema", {"functions": {"f": fn}}) == (200, {"schemas": {}})


DOUBLE = {
    "inputTypes": ["UInt64"],
    "outputType": "UInt64",
    "source": {"source": "function double(x) { return x * 2n }", "filename": "double.js"},
}


def test_schema_plans_calls_of_the_datasets_own_functions(cluster: Cluster):
    sql = "SELECT block_num, self.double(gas_used) AS doubled FROM eth.blocks"
    body = {"dependencies": DEP, "tables": {"t": sql}, "functions": {"double": DOUBLE}}
    status, answer = post(cluster, "/schema", body)
    assert status == 200, answer
    assert answer["schemas"]["t"]["arrow"]["fields"][2] == {
        "name": "doubled", "type": "UInt64", "nullable": True
    }  # fmt: skip
    # Without the declaration the call does not plan.
    status, answer = post(cluster, "/schema", {"dependencies": DEP, "tables": {"t": sql}})
    assert (status, answer["error_code"]) == (400, "INVALID_PLAN")
    # A call with the wrong argument type does not either.
    wrong = {**body, "tables": {"t": "SELECT self.double(hash) AS d FROM eth.blocks"}}
    status, answer = post(cluster, "/schema", wrong)
    assert (status, answer["error_code"]) == (400, "INVALID_PLAN")


def test_schema_plans_calls_of_a_derived_dependencys_functions(cluster: Cluster):
    """`<alias>.<fn>(...)`: a derived dependency's JavaScript function, with its types."""
    doubler = derived_manifest()
    doubler["functions"] = {"double": DOUBLE}
    body = {"namespace": "test", "name": "doubler", "version": "0.1.0", "manifest": doubler}
    assert post(cluster, "/datasets", body)[0] == 201
    sql = "SELECT block_num, d.double(block_num) AS twice FROM d.txs"
    deps = {"d": "test/doubler@0.1.0"}
    status, answer = post(cluster, "/schema", {"dependencies": deps, "tables": {"t": sql}})
    assert status == 200, answer
    assert answer["schemas"]["t"]["arrow"]["fields"][2] == {
        "name": "twice", "type": "UInt64", "nullable": True
    }  # fmt: skip
    # Under another alias, or from a dependency without it, the call does not plan.
    wrong = {"dependencies": deps, "tables": {"t": sql.replace("d.double", "e.double")}}
    assert post(cluster, "/schema", wrong)[1]["error_code"] == "INVALID_PLAN"
    raw = {"dependencies": DEP, "tables": {"t": "SELECT eth.double(gas_used) FROM eth.blocks"}}
    assert post(cluster, "/schema", raw)[1]["error_code"] == "INVALID_PLAN"


SCHEMA_ERRORS = [
    ({}, 400, "EMPTY_TABLES_AND_FUNCTIONS"),
    ({"tables": []}, 400, "INVALID_PAYLOAD_FORMAT"),
    ({"tables": {"t": 5}}, 400, "INVALID_PAYLOAD_FORMAT"),
    ({"tables": {"t": "SELECT 1 FROM eth.logs"}, "dependencies": {"eth": "x"}}, 400, "INVALID_PAYLOAD_FORMAT"),
    ({"tables": {"t": "SELECT 1 FROM eth.logs"}, "dependencies": {"eth": "test/nope@1.0.0"}}, 404, "DEPENDENCY_NOT_FOUND"),
    ({"tables": {"t": "SELECT 1 FROM eth.logs"}, "dependencies": {"eth": "test/chain@9.9.9"}}, 404, "DEPENDENCY_NOT_FOUND"),
    ({"tables": {"t": "SELEC block_num FROM eth.logs"}, "dependencies": DEP}, 400, "INVALID_TABLE_SQL"),
    ({"tables": {"t": "SELECT 1"}, "dependencies": DEP}, 400, "NO_TABLE_REFERENCES"),
    ({"tables": {"t": "SELECT count(*) FROM eth.logs"}, "dependencies": DEP}, 400, "NON_INCREMENTAL_QUERY"),
    ({"tables": {"t": "SELECT nope FROM eth.logs"}, "dependencies": DEP}, 400, "INVALID_PLAN"),
    ({"tables": {"t": "SELECT block_num FROM self.t"}, "dependencies": DEP}, 400, "SELF_REFERENCING_TABLE"),
    (
        {"tables": {"a": "SELECT block_num FROM self.b", "b": "SELECT block_num FROM self.a"}},
        400,
        "CYCLIC_DEPENDENCY",
    ),
]  # fmt: skip


@pytest.mark.parametrize("body,status,code", SCHEMA_ERRORS)
def test_schema_errors_carry_amps_codes(cluster: Cluster, body, status, code):
    got, answer = post(cluster, "/schema", body)
    assert (got, answer["error_code"]) == (status, code), answer
    assert answer["error_message"]


def derived_manifest(declared_type: object = {"FixedSizeBinary": 32}) -> dict:
    field = lambda name, type_: {"name": name, "type": type_, "nullable": False}  # noqa: E731
    return {
        "kind": "manifest",
        "dependencies": DEP,
        "tables": {
            "txs": {
                "input": {"sql": "SELECT block_num, tx_hash FROM eth.transactions"},
                "schema": {
                    "arrow": {
                        "fields": [
                            field("_block_num", "UInt64"),
                            field("block_num", "UInt64"),
                            field("tx_hash", declared_type),
                        ]
                    }
                },
            }
        },
        "functions": {},
    }


def test_a_derived_manifest_registers_under_amps_hash(cluster: Cluster):
    manifest = derived_manifest()
    status, body = post(
        cluster,
        "/datasets",
        {"namespace": "test", "name": "txs", "version": "0.1.0", "manifest": manifest},
    )
    assert status == 201, body
    assert body["kind"] == "manifest" and body["tables"] == ["txs"]
    assert body["manifest_hash"] == manifest_hash(manifest)
    with cluster.api() as api:
        stored = api.get(f"/manifests/{body['manifest_hash']}").json()
        assert stored["tables"]["txs"]["input"]["sql"] == manifest["tables"]["txs"]["input"]["sql"]
        # Its dependency has committed nothing: there is no "latest" block to end at.
        latest = api.post("/datasets/test/txs/versions/0.1.0/deploy", json={"end_block": "latest"})
        # A continuous job waits for its dependency (tests/e2e/test_derived_jobs.py runs them).
        following = api.post("/datasets/test/txs/versions/0.1.0/deploy", json={})
        job = api.get(f"/jobs/{following.json()['job_id']}").json()
        api.put(f"/jobs/{job['id']}/stop")
    assert latest.status_code == 400, latest.text
    assert latest.json()["error_code"] == "DEPENDENCY_NOT_COMMITTED"
    assert "committed none" in latest.json()["error_message"]
    assert following.status_code == 202, following.text
    assert job["descriptor"]["kind"] == "materialize-derived"


def test_a_registered_derived_dataset_is_queryable_with_its_declared_columns(cluster: Cluster):
    manifest = derived_manifest()
    body = {"namespace": "test", "name": "shown", "version": "0.1.0", "manifest": manifest}
    assert post(cluster, "/datasets", body)[0] == 201
    _, jsonl, _ = cluster.start_server("derived-server")

    def query(sql: str) -> httpx.Response:
        return httpx.post(jsonl, content=sql, timeout=60)

    # Not materialized yet: no rows, but the declared table and columns.
    counted = query('SELECT count(*) AS n, max(tx_hash) AS h FROM "test/shown".txs')
    assert counted.status_code == 200, counted.text
    assert json.loads(counted.text) == {"n": 0, "h": None}
    columns = query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'test/shown' ORDER BY ordinal_position"
    )
    assert columns.status_code == 200, columns.text
    rows = [json.loads(line) for line in columns.text.splitlines()]
    assert [r["column_name"] for r in rows] == ["_block_num", "block_num", "tx_hash"]
    missing = query('SELECT * FROM "test/shown".blocks')  # the evm tables are not its own
    assert missing.status_code == 404, missing.text


@pytest.mark.parametrize(
    "change,cause",
    [
        (lambda m: m["tables"]["txs"]["schema"]["arrow"]["fields"][2].update(type="Binary"), "SCHEMA_MISMATCH"),
        (lambda m: m.update(dependencies={"eth": "test/missing@1.0.0"}), "DEPENDENCY_NOT_FOUND"),
        (lambda m: m["tables"]["txs"]["input"].update(sql="SELECT block_num FROM eth.nope"), "INVALID_PLAN"),
        (lambda m: m["tables"]["txs"]["input"].update(sql="SELECT block_num FROM self.txs"), "SELF_REFERENCING_TABLE"),
    ],
)  # fmt: skip
def test_a_derived_manifest_that_does_not_plan_is_refused_and_nothing_is_stored(
    cluster: Cluster, change, cause
):
    manifest = derived_manifest()
    change(manifest)
    before = manifests(cluster)
    status, body = post(
        cluster, "/datasets", {"namespace": "test", "name": "bad", "manifest": manifest}
    )
    assert status == 400 and body["error_code"] == "MANIFEST_VALIDATION_ERROR", body
    assert body["error_message"].startswith(cause), body
    assert manifests(cluster) == before
