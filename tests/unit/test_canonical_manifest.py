"""Amp's canonical manifest serialization: key order of Amp's types, sorted maps, defaults."""

import json

import pytest

from ampd.datasets.canonical import canonical_hash, canonical_text

FIELDS = {"arrow": {"fields": [{"nullable": False, "type": "UInt64", "name": "block_num"}]}}


def derived(**extra):
    return {
        "kind": "manifest",
        "tables": {
            "zeta": {"schema": FIELDS, "input": {"sql": "SELECT block_num FROM eth.blocks"}},
            "alpha": {"input": {"sql": "SELECT block_num FROM self.zeta"}, "schema": FIELDS},
        },
        "dependencies": {"eth": "edgeandnode/mainnet@1.0.0"},
        **extra,
    }


def test_derived_keys_follow_amps_types_and_maps_are_sorted():
    text = canonical_text(derived())
    field = '{"name":"block_num","type":"UInt64","nullable":false}'
    assert text == (
        '{"kind":"manifest","dependencies":{"eth":"edgeandnode/mainnet@1.0.0"},'
        '"tables":{"alpha":{"input":{"sql":"SELECT block_num FROM self.zeta"},'
        f'"schema":{{"arrow":{{"fields":[{field}]}}}}}},'
        '"zeta":{"input":{"sql":"SELECT block_num FROM eth.blocks"},'
        f'"schema":{{"arrow":{{"fields":[{field}]}}}}}}}},'
        '"functions":{}}'
    )


def test_functions_keep_amps_camel_case_fields_in_order():
    fn = {
        "source": {"filename": "f.js", "source": "function f(x) { return x; }"},
        "outputType": {"FixedSizeBinary": 20},
        "inputTypes": ["Binary", "UInt64"],
    }
    text = canonical_text(derived(functions={"f": fn}))
    assert text.endswith(
        '"functions":{"f":{"inputTypes":["Binary","UInt64"],'
        '"outputType":{"FixedSizeBinary":20},'
        '"source":{"source":"function f(x) { return x; }","filename":"f.js"}}}}'
    )


def test_order_spacing_and_a_hash_s_case_do_not_change_the_hash():
    upper = "AB" * 32
    a = derived(dependencies={"eth": f"edgeandnode/mainnet@{upper}"})
    b = json.loads(json.dumps(a, indent=2, sort_keys=True))
    b["dependencies"]["eth"] = f"edgeandnode/mainnet@{upper.lower()}"
    assert canonical_hash(a) == canonical_hash(b)
    assert canonical_hash(a) != canonical_hash(derived())


def test_non_ascii_stays_and_control_characters_are_escaped_as_serde_json_does():
    m = derived()
    m["tables"]["alpha"]["input"]["sql"] = "SELECT 'é\t\x01' AS x FROM self.zeta"
    text = canonical_text(m)
    assert "'é\\t\\u0001'" in text


def test_raw_defaults_are_filled_in_and_unknown_fields_dropped():
    short = {"kind": "evm-rpc", "network": "anvil", "comment": "ignored"}
    full = {"kind": "evm-rpc", "network": "anvil", "start_block": 0, "finalized_blocks_only": False}
    assert canonical_text(short) == canonical_text(full)
    assert canonical_text(short).startswith('{"kind":"evm-rpc","network":"anvil","start_block":0,')


def test_an_unknown_kind_has_no_canonical_form():
    with pytest.raises(ValueError, match="'sql'"):
        canonical_text({"kind": "sql"})
