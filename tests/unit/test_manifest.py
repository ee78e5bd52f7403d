"""Manifest parsing, validation, hashing and generation; Arrow types in arrow-rs JSON form."""

import hashlib
import json

import pyarrow as pa
import pytest

from ampd.datasets import arrow_types
from ampd.datasets.manifest import (
    InvalidManifest,
    Manifest,
    ManifestValidationError,
    generate_manifest,
    manifest_hash,
    parse_manifest,
)
from ampd.providers.evm_rpc.schema import TABLES


def minimal(**extra):
    return {"kind": "evm-rpc", "network": "anvil", **extra}


# -- generation and round trip --------------------------------------------------------------


def test_generate_then_parse_gives_the_extractor_schemas():
    generated = generate_manifest(network="anvil")
    manifest = parse_manifest(json.dumps(generated))
    assert isinstance(manifest, Manifest)
    assert set(manifest.tables) == {"blocks", "transactions", "logs"}
    for name, schema in TABLES.items():
        assert manifest.tables[name].schema.equals(schema), name
        assert manifest.tables[name].network == "anvil"


def test_generate_layout_matches_amp():
    m = generate_manifest("evm-rpc", "mainnet", start_block=15_000_000, finalized_blocks_only=True)
    assert list(m) == ["kind", "network", "start_block", "finalized_blocks_only", "tables"]
    assert (m["kind"], m["network"], m["start_block"], m["finalized_blocks_only"]) == (
        "evm-rpc",
        "mainnet",
        15_000_000,
        True,
    )
    assert list(m["tables"]) == ["blocks", "logs", "transactions"]
    blocks = m["tables"]["blocks"]
    assert set(blocks) == {"schema", "network"} and blocks["network"] == "mainnet"
    fields = blocks["schema"]["arrow"]["fields"]
    assert fields[0] == {"name": "_block_num", "type": "UInt64", "nullable": False}
    assert fields[2] == {
        "name": "timestamp",
        "type": {"Timestamp": ["Nanosecond", "+00:00"]},
        "nullable": False,
    }
    assert {"name": "difficulty", "type": {"Decimal128": [38, 0]}, "nullable": False} in fields
    tx_fields = {f["name"]: f for f in m["tables"]["transactions"]["schema"]["arrow"]["fields"]}
    assert tx_fields["blob_versioned_hashes"]["type"] == {
        "List": {
            "name": "item",
            "data_type": {"FixedSizeBinary": 32},
            "nullable": False,
            "dict_id": 0,
            "dict_is_ordered": False,
            "metadata": {},
        }
    }
    struct = tx_fields["access_list"]["type"]["List"]["data_type"]["Struct"]
    assert [f["name"] for f in struct] == ["address", "storage_keys"]
    assert struct[1]["data_type"]["List"]["name"] == "item"


def test_generate_is_json_serialisable_and_stable():
    a = generate_manifest(network="anvil")
    b = generate_manifest(network="anvil")
    assert json.dumps(a) == json.dumps(b)
    assert manifest_hash(a) == manifest_hash(b)


def test_generate_rejects_unknown_kind_and_bad_network():
    with pytest.raises(InvalidManifest, match="solana"):
        generate_manifest("solana", "mainnet")
    with pytest.raises(ManifestValidationError, match="network"):
        generate_manifest(network="")
    with pytest.raises(ManifestValidationError, match="start_block"):
        generate_manifest(network="anvil", start_block=-5)


def test_generate_firehose_has_the_four_tables_of_its_kind():
    from ampd.providers.firehose.tables import SCHEMAS

    generated = generate_manifest("firehose", "mainnet", start_block=15_000_000)
    assert list(generated["tables"]) == ["blocks", "calls", "logs", "transactions"]
    parsed = parse_manifest(generated)
    assert parsed.kind == "firehose" and parsed.schemas == dict(SCHEMAS)
    calls = [f["name"] for f in generated["tables"]["calls"]["schema"]["arrow"]["fields"]]
    assert calls[:2] == ["_block_num", "block_hash"] and "parent_index" in calls
    assert manifest_hash(generated) != manifest_hash(generate_manifest("evm-rpc", "mainnet"))


# -- parsing --------------------------------------------------------------------------------


def test_defaults_and_tables_optional():
    m = parse_manifest(minimal())
    assert (m.kind, m.network, m.start_block, m.finalized_blocks_only) == (
        "evm-rpc",
        "anvil",
        0,
        False,
    )
    assert m.tables == {}
    assert set(m.schemas) == {"blocks", "transactions", "logs"}


def test_accepts_text_bytes_and_objects():
    text = json.dumps(minimal(start_block=7, finalized_blocks_only=True))
    for source in (text, text.encode(), json.loads(text)):
        m = parse_manifest(source)
        assert (m.start_block, m.finalized_blocks_only) == (7, True)


def test_older_table_schema_is_parsed_not_rejected():
    # An older layout: no _block_num column, fewer columns.
    older = minimal(
        tables={
            "blocks": {
                "schema": {
                    "arrow": {
                        "fields": [
                            {"name": "block_num", "type": "UInt64", "nullable": False},
                            {"name": "hash", "type": {"FixedSizeBinary": 32}, "nullable": False},
                        ]
                    }
                },
                "network": "anvil",
            }
        }
    )
    m = parse_manifest(older)
    assert m.tables["blocks"].schema.names == ["block_num", "hash"]
    assert m.schemas["blocks"].equals(TABLES["blocks"])  # the extractor's schema still wins


def test_unknown_fields_are_ignored():
    assert parse_manifest(minimal(comment="hello")).network == "anvil"


@pytest.mark.parametrize(
    "source,match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"evm-rpc"', "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        ({"network": "anvil"}, "no 'kind'"),
        ({"kind": "solana", "network": "anvil"}, 'unknown manifest kind "solana"'),
        ({"kind": 5, "network": "anvil"}, "unknown manifest kind 5"),
    ],
)
def test_invalid_manifest(source, match):
    with pytest.raises(InvalidManifest, match=match):
        parse_manifest(source)


@pytest.mark.parametrize(
    "manifest,field,expected",
    [
        ({"kind": "evm-rpc"}, "network", "missing"),
        (minimal(network=""), "network", "non-empty"),
        (minimal(network=3), "network", "string"),
        (minimal(start_block=-1), "start_block", ">= 0"),
        (minimal(start_block="10"), "start_block", "integer"),
        (minimal(start_block=1.5), "start_block", "integer"),
        (minimal(start_block=2**64), "start_block", "2^64"),
        (minimal(finalized_blocks_only="yes"), "finalized_blocks_only", "true or false"),
        (minimal(tables=[]), "tables", "object"),
        (minimal(tables={"blocks": {"network": "anvil"}}), "tables.blocks.schema", "missing"),
        (
            minimal(
                tables={
                    "blocks": {
                        "schema": {"arrow": {"fields": [{"name": "a", "type": "UInt64"}]}},
                        "network": "anvil",
                    }
                }
            ),
            "tables.blocks.schema.arrow.fields[0].nullable",
            "missing",
        ),
    ],
)
def test_validation_errors_name_field_value_and_expectation(manifest, field, expected):
    with pytest.raises(ManifestValidationError) as info:
        parse_manifest(manifest)
    assert info.value.field == field
    assert expected in info.value.expected
    assert field in str(info.value)


def test_unknown_arrow_type_names_table_field_and_type():
    m = generate_manifest(network="anvil")
    fields = m["tables"]["transactions"]["schema"]["arrow"]["fields"]
    fields[24]["type"]["List"]["data_type"]["Struct"][0]["data_type"] = "Address"
    with pytest.raises(ManifestValidationError) as info:
        parse_manifest(m)
    message = str(info.value)
    assert "'transactions'" in message and "'access_list'" in message and '"Address"' in message
    assert info.value.field == "tables.transactions.schema.arrow.fields[24].type"


def test_unknown_top_level_arrow_type():
    m = minimal(
        tables={
            "logs": {
                "schema": {
                    "arrow": {"fields": [{"name": "x", "type": {"Uint256": 1}, "nullable": True}]}
                },
                "network": "anvil",
            }
        }
    )
    with pytest.raises(ManifestValidationError, match=r"'logs', field 'x'.*Uint256"):
        parse_manifest(m)


# -- hashing --------------------------------------------------------------------------------


# Amp's manifest hash of its evm-rpc manifest for mainnet from block 15,000,000 (a test vector
# of Amp's repository: tests/config/manifests/<hash> holds the canonical text).
AMP_MAINNET_HASH = "429dc6fc6e9bb3098ddb7e58be857f5f8e00e6f049001cd9ffa7609bdb9597be"


def test_hash_is_amps_for_the_same_manifest():
    generated = generate_manifest(network="mainnet", start_block=15_000_000)
    assert manifest_hash(generated) == AMP_MAINNET_HASH
    assert manifest_hash(json.dumps(generated, indent=4, sort_keys=True)) == AMP_MAINNET_HASH
    assert parse_manifest(generated).hash == AMP_MAINNET_HASH


def test_hash_is_sha256_of_the_canonical_text():
    obj = {"network": "anvil", "kind": "evm-rpc", "unknown": 1}
    text = b'{"kind":"evm-rpc","network":"anvil","start_block":0,"finalized_blocks_only":false,"tables":{}}'
    assert manifest_hash(obj) == hashlib.sha256(text).hexdigest()


def test_hash_ignores_key_order_and_whitespace():
    a = parse_manifest('{"kind": "evm-rpc", "network": "anvil"}')
    b = parse_manifest('{"network":"anvil",\n "kind":"evm-rpc"}')
    assert a.hash == b.hash
    assert a.hash == parse_manifest(minimal(start_block=0, finalized_blocks_only=False)).hash
    assert a.hash != parse_manifest(minimal(start_block=1)).hash


# -- arrow-rs JSON data types ---------------------------------------------------------------


ROUND_TRIP = [
    ("Boolean", pa.bool_()),
    ("Int32", pa.int32()),
    ("UInt64", pa.uint64()),
    ("Float64", pa.float64()),
    ("Utf8", pa.utf8()),
    ("LargeUtf8", pa.large_utf8()),
    ("Binary", pa.binary()),
    ("Date32", pa.date32()),
    ({"FixedSizeBinary": 20}, pa.binary(20)),
    ({"Decimal128": [38, 0]}, pa.decimal128(38, 0)),
    ({"Decimal256": [76, 10]}, pa.decimal256(76, 10)),
    ({"Timestamp": ["Nanosecond", "+00:00"]}, pa.timestamp("ns", tz="+00:00")),
    ({"Timestamp": ["Millisecond", None]}, pa.timestamp("ms")),
    ({"Duration": "Second"}, pa.duration("s")),
    ({"Time64": "Microsecond"}, pa.time64("us")),
]


@pytest.mark.parametrize("json_form,arrow", ROUND_TRIP)
def test_arrow_type_round_trip(json_form, arrow):
    assert arrow_types.from_json(json_form) == arrow
    assert arrow_types.to_json(arrow) == json_form


def test_nested_types_round_trip():
    for schema in TABLES.values():
        for f in schema:
            back = arrow_types.from_json(arrow_types.to_json(f.type))
            assert back.equals(f.type), f.name
            if pa.types.is_list(back):
                assert back.value_field.name == "item" and not back.value_field.nullable


def test_nested_field_keys_are_optional_on_input():
    t = arrow_types.from_json({"List": {"name": "element", "data_type": "Int64", "nullable": True}})
    assert t == pa.list_(pa.field("element", pa.int64()))


@pytest.mark.parametrize(
    "bad",
    [
        "Uint64",
        {"FixedSizeBinary": 0},
        {"FixedSizeBinary": "32"},
        {"Decimal128": [38]},
        {"Timestamp": ["Fortnight", None]},
        {"List": {"data_type": "Int64"}},
        {"List": {"name": "item", "nullable": False}},
        {"Struct": "address"},
        {"FixedSizeBinary": 32, "Utf8": 1},
        42,
    ],
)
def test_unknown_arrow_types_raise(bad):
    with pytest.raises(arrow_types.UnknownArrowType):
        arrow_types.from_json(bad, "col")
