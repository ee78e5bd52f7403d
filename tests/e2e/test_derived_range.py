"""A derived dataset's tables evaluated over block ranges of a real job's committed files
(what a worker materializing it will compute per range), against the node's own logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ampd.datasets.derived import parse_derived
from ampd.metadb.db import MetadataDb
from ampd.metadb.managed import ManagedPostgres
from ampd.sql.catalog import Catalog
from ampd.sql.derived_range import evaluate_range, with_block_num
from ampd.sql.derived_schema import DerivedSchemaError
from support.anvil import Anvil
from support.cluster import Cluster, fill_chain
from support.derived import even_logs_manifest, field, node_even_logs
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(240)]


MANIFEST = even_logs_manifest("test/chain@1.0.0")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres) -> Iterator[dict]:
    with Anvil() as anvil:
        head = fill_chain(anvil, 30, txs_per_block=2)
        url = create_database(pg_cluster)
        cluster = Cluster(tmp_path_factory.mktemp("range"), url, anvil, {"writer": {"bytes": 1}})
        try:
            cluster.start_controller()
            cluster.start_worker("w", env={"AMP_EXTRACT_CHUNK_BLOCKS": "4"})
            cluster.register()
            job = cluster.deploy({"end_block": str(head)})
            assert cluster.wait_job(job)["status"] == "COMPLETED"
            yield {"cluster": cluster, "anvil": anvil, "head": head, "url": url}
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, url)


async def test_each_range_gives_the_nodes_rows_of_that_range_only(env: dict):
    anvil, cluster = env["anvil"], env["cluster"]
    manifest = parse_derived(MANIFEST)
    async with MetadataDb(env["url"], pool_size=2) as db:
        snapshot = await Catalog(db, str(cluster.data_dir)).snapshot()
        deps = {"eth": snapshot.schemas["test/chain@1.0.0"]}
        assert len(deps["eth"].tables["logs"]) > 3, "the range must cut across files"
        seen = []
        for first, last in ((0, 6), (7, 7), (8, 19), (20, env["head"])):
            chunk = evaluate_range(manifest, deps, snapshot, first, last)
            assert [h.number for h in chunk.headers] == list(range(first, last + 1))
            for h in chunk.headers[:3]:
                block = anvil.block(h.number, full=False)
                assert (h.hash, h.parent_hash) == (block["hash"], block["parentHash"])
            even = chunk.batches["even_logs"]
            assert even.schema == manifest.tables["even_logs"].schema
            rows = list(zip(*(even.column(c).to_pylist() for c in
                              ("block_num", "tx_hash", "log_index", "address")), strict=True))  # fmt: skip
            assert rows == node_even_logs(anvil, first, last)
            assert even.column("_block_num").to_pylist() == even.column("block_num").to_pylist()
            late = chunk.batches["late"]
            assert late.column("_block_num").to_pylist() == sorted(
                set(even.column("_block_num").to_pylist())
            )
            tagged = chunk.batches["tagged"]  # a JavaScript function over a sibling
            assert tagged.column("t").to_pylist() == [f"log-{r[2]}" for r in rows]
            assert tagged.column("_block_num").to_pylist() == [r[0] for r in rows]
            seen += rows
        assert len(seen) == len(node_even_logs(anvil, 0, env["head"])) > 30


async def test_a_range_the_dependency_has_not_committed_is_refused(env: dict):
    async with MetadataDb(env["url"], pool_size=2) as db:
        snapshot = await Catalog(db, str(env["cluster"].data_dir)).snapshot()
        deps = {"eth": snapshot.schemas["test/chain@1.0.0"]}
        with pytest.raises(DerivedSchemaError, match="are not all committed"):
            evaluate_range(
                parse_derived(MANIFEST), deps, snapshot, env["head"] - 2, env["head"] + 5
            )


async def test_a_join_that_does_not_select_block_num_is_refused(env: dict):
    joined = {**MANIFEST, "functions": {}, "tables": {"j": {
        "input": {"sql": "SELECT l.log_index FROM eth.logs l JOIN eth.blocks b ON l.block_num = b.block_num"},
        "schema": {"arrow": {"fields": [field("_block_num", "UInt64"), field("log_index", "UInt32")]}},
    }}}  # fmt: skip
    async with MetadataDb(env["url"], pool_size=2) as db:
        snapshot = await Catalog(db, str(env["cluster"].data_dir)).snapshot()
        deps = {"eth": snapshot.schemas["test/chain@1.0.0"]}
        with pytest.raises(DerivedSchemaError, match="without selecting _block_num") as refused:
            evaluate_range(parse_derived(joined), deps, snapshot, 0, 5)
    assert refused.value.code == "BLOCK_NUM_UNKNOWN"


def test_block_num_goes_first_in_the_top_level_select():
    assert with_block_num("SELECT a, b FROM t") == "SELECT _block_num, a, b FROM t"
    assert (
        with_block_num("select distinct on (x) x from t")
        == "select distinct on (x) _block_num, x from t"
    )
    assert (
        with_block_num("WITH c AS (SELECT 1 AS x) SELECT /* SELECT */ x FROM c")
        == "WITH c AS (SELECT 1 AS x) SELECT _block_num, /* SELECT */ x FROM c"
    )
    with pytest.raises(ValueError):
        with_block_num("VALUES (1)")


async def test_tables_reading_one_dependency_table_read_the_columns_they_name(env: dict):
    """Two tables over eth.logs read it once, projected to the columns they name (one of
    them quoted); a third that selects * gets every column; each equals the node's rows."""
    anvil = env["anvil"]
    logs = {
        "sql": "SELECT block_num, tx_hash, log_index, address FROM eth.logs WHERE log_index % 2 = 0",
        "fields": [field("_block_num", "UInt64"), field("block_num", "UInt64"),
                   field("tx_hash", {"FixedSizeBinary": 32}), field("log_index", "UInt32"),
                   field("address", {"FixedSizeBinary": 20})],
    }  # fmt: skip
    quoted = {
        "sql": 'SELECT "block_num", "address" FROM eth.logs WHERE log_index % 2 = 0',
        "fields": [field("_block_num", "UInt64"), field("block_num", "UInt64"),
                   field("address", {"FixedSizeBinary": 20})],
    }  # fmt: skip
    manifest = {**MANIFEST, "functions": {}, "tables": {
        name: {"input": {"sql": t["sql"]}, "schema": {"arrow": {"fields": t["fields"]}}}
        for name, t in (("named", logs), ("quoted", quoted))
    }}  # fmt: skip
    async with MetadataDb(env["url"], pool_size=2) as db:
        snapshot = await Catalog(db, str(env["cluster"].data_dir)).snapshot()
        deps = {"eth": snapshot.schemas["test/chain@1.0.0"]}
        everything = deps["eth"].schema("logs")
        star = {"input": {"sql": "SELECT * FROM eth.logs WHERE log_index % 2 = 0"},
                "schema": {"arrow": {"fields": [
                    field(f.name, _arrow_json(f.type), f.nullable) for f in everything
                ]}}}  # fmt: skip
        chunk = evaluate_range(parse_derived(manifest), deps, snapshot, 3, 17)
        with_star = evaluate_range(
            parse_derived({**manifest, "tables": {**manifest["tables"], "star": star}}),
            deps, snapshot, 3, 17,
        )  # fmt: skip
    want = node_even_logs(anvil, 3, 17)
    assert want
    for result in (chunk, with_star):
        named = result.batches["named"]
        got = list(zip(*(named.column(c).to_pylist() for c in
                         ("block_num", "tx_hash", "log_index", "address")), strict=True))  # fmt: skip
        assert got == want
        q = result.batches["quoted"]
        assert list(zip(q.column("block_num").to_pylist(), q.column("address").to_pylist(),
                        strict=True)) == [(r[0], r[3]) for r in want]  # fmt: skip
    all_columns = with_star.batches["star"]
    assert all_columns.schema.names == everything.names
    assert all_columns.column("tx_hash").to_pylist() == [r[1] for r in want]


def _arrow_json(t) -> object:  # noqa: ANN001
    """The manifest's JSON for the Arrow types of the logs table."""
    import pyarrow as pa

    if pa.types.is_fixed_size_binary(t):
        return {"FixedSizeBinary": t.byte_width}
    if pa.types.is_timestamp(t):
        return {"Timestamp": ["Nanosecond", t.tz]}
    return {pa.uint64(): "UInt64", pa.uint32(): "UInt32", pa.binary(): "Binary"}[t]
