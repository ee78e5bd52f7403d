"""Derived dataset manifests (kind "manifest"): their shape, and the order of their tables."""

import copy

import pyarrow as pa
import pytest

from ampd.datasets.derived import DerivedManifestError, parse_derived
from ampd.datasets.manifest import ManifestValidationError

FIELDS = [
    {"name": "_block_num", "type": "UInt64", "nullable": False},
    {"name": "tx_hash", "type": {"FixedSizeBinary": 32}, "nullable": False},
]


def table(sql):
    return {"input": {"sql": sql}, "schema": {"arrow": {"fields": copy.deepcopy(FIELDS)}}}


def manifest(**tables):
    return {
        "kind": "manifest",
        "dependencies": {"eth": "edgeandnode/mainnet@1.0.0"},
        "tables": {name: table(sql) for name, sql in tables.items()},
    }


def test_a_manifest_with_dependencies_tables_and_functions():
    raw = manifest(transfers="SELECT _block_num, tx_hash FROM eth.logs WHERE topic0 = x'00'")
    raw["functions"] = {
        "decode": {
            "inputTypes": ["Binary", "UInt64"],
            "outputType": "Utf8",
            "source": {"source": "function decode(a, b) { return '' }", "filename": "d.js"},
        }
    }
    m = parse_derived(raw)
    assert m.dependencies == {"eth": "edgeandnode/mainnet@1.0.0"}
    assert m.table_order == ["transfers"]
    t = m.tables["transfers"]
    assert t.schema == pa.schema(
        [pa.field("_block_num", pa.uint64(), False), pa.field("tx_hash", pa.binary(32), False)]
    )
    assert t.reads == ()
    f = m.functions["decode"]
    assert f.input_types == (pa.binary(), pa.uint64()) and f.output_type == pa.utf8()
    assert f.filename == "d.js"


def test_sibling_tables_come_after_the_tables_they_read():
    m = parse_derived(
        manifest(
            totals='SELECT _block_num, tx_hash FROM self.transfers JOIN self."approvals" ON true',
            transfers="SELECT _block_num, tx_hash FROM eth.logs",
            approvals="SELECT _block_num, tx_hash FROM self.transfers",
            blocks="SELECT _block_num, hash AS tx_hash FROM eth.blocks",
        )
    )
    order = m.table_order
    assert sorted(order) == ["approvals", "blocks", "totals", "transfers"]
    assert order.index("transfers") < order.index("approvals") < order.index("totals")
    assert m.tables["totals"].reads == ("approvals", "transfers")
    # Unrelated tables come by name: blocks before the chain that starts at approvals.
    assert order == ["transfers", "approvals", "blocks", "totals"]


def test_a_table_that_reads_itself_is_refused():
    with pytest.raises(DerivedManifestError) as err:
        parse_derived(manifest(t="SELECT * FROM self.t"))
    assert err.value.code == "SELF_REFERENCING_TABLE" and "self.t" in str(err.value)


def test_tables_that_read_each_other_in_a_cycle_are_refused():
    with pytest.raises(DerivedManifestError) as err:
        parse_derived(
            manifest(a="SELECT * FROM self.b", b="SELECT * FROM self.c", c="SELECT * FROM self.a")
        )
    assert err.value.code == "CYCLIC_DEPENDENCY"
    assert "a -> b -> c -> a" in str(err.value)


def test_a_sibling_table_that_does_not_exist_is_named():
    with pytest.raises(DerivedManifestError) as err:
        parse_derived(manifest(a="SELECT * FROM self.missing"))
    assert err.value.code == "TABLE_NOT_FOUND_IN_DATASET" and "self.missing" in str(err.value)


def test_self_in_a_string_or_a_comment_is_no_reference():
    m = parse_derived(manifest(a="SELECT 'self.a' AS x -- self.a\nFROM eth.logs"))
    assert m.tables["a"].reads == ()


def edit(raw, path, value):
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "field", "expected"),
    [
        (["kind"], "evm-rpc", "kind", "expected 'manifest'"),
        (["dependencies", "eth"], "edgeandnode/mainnet", "dependencies.eth", "namespace/name@version"),
        (["dependencies", "eth"], "edgeandnode/mainnet@latest", "dependencies.eth", "not a symbolic"),
        (["dependencies", "eth"], "Edge/mainnet@1.0.0", "dependencies.eth", "namespace/name@version"),
        (["dependencies", "1eth"], "edgeandnode/mainnet@1.0.0", "dependencies.1eth", "dependency alias"),
        (["tables", "a", "input", "sql"], "   ", "tables.a.input.sql", "not an empty string"),
        (["tables", "a", "input"], KeyError, "tables.a.input", "required field is missing"),
        (["tables", "a", "schema", "arrow", "fields"], [], "tables.a.schema.arrow.fields",
         "at least one field"),
        (["tables", "a", "schema", "arrow", "fields", 1, "type"], "Int512",
         "tables.a.schema.arrow.fields[1].type", ""),
        (["tables", "a", "schema", "arrow", "fields", 0, "nullable"], "no",
         "tables.a.schema.arrow.fields[0].nullable", "expected true or false"),
        (["tables"], {}, "tables", "at least one table"),
        (["tables"], [], "tables", "expected an object"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(path, value, field, expected):
    raw = edit(manifest(a="SELECT * FROM eth.logs"), path, value)
    if path == ["dependencies", "1eth"]:
        raw["dependencies"] = {"1eth": value}
    with pytest.raises(ManifestValidationError) as err:
        parse_derived(raw)
    assert err.value.field == field, str(err.value)
    assert expected in str(err.value)


def test_a_table_name_must_be_an_identifier():
    raw = manifest()
    raw["tables"] = {"my-table": table("SELECT 1 FROM eth.logs")}
    with pytest.raises(ManifestValidationError) as err:
        parse_derived(raw)
    assert err.value.field == "tables.my-table" and "a table name" in str(err.value)
