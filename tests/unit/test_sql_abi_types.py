"""Solidity type strings and event/function signatures as the functions read them."""

from __future__ import annotations

import pyarrow as pa
import pytest
from eth_abi.grammar import parse as eth_parse
from eth_hash.auto import keccak

from ampd.sql.functions.abi_types import parse_type
from ampd.sql.functions.errors import AbiError
from ampd.sql.functions.signatures import parse_event, parse_function


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("uint", "uint256"),
        ("int", "int256"),
        ("uint8", "uint8"),
        ("bytes32", "bytes32"),
        ("address[]", "address[]"),
        ("bytes32[3][]", "bytes32[3][]"),
        ("(int256, int8, string[])", "(int256,int8,string[])"),
        ("tuple(uint256,bool)[2]", "(uint256,bool)[2]"),
        (" ( uint , ( address , bool ) [ ] ) ", "(uint256,(address,bool)[])"),
        ("(bool,)", "(bool)"),
    ],
)
def test_type_strings(text: str, canonical: str) -> None:
    t = parse_type(text)
    assert t.name == canonical
    assert eth_parse(canonical).to_type_str() == canonical  # an independent grammar agrees


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("uint7", "invalid size for type: uint7"),
        ("uint264", "invalid size for type: uint264"),
        ("int0", "invalid size for type: int0"),
        ("bytes0", "invalid size for type: bytes0"),
        ("bytes33", "invalid size for type: bytes33"),
        ("byte", "invalid type string: byte"),
        ("uint8[0]", "invalid size for type: uint8[0]"),
        ("fixed128x18", "invalid type string: fixed128x18"),
        ("(uint8", "expected ')'"),
        ("uint8 x", "invalid type string: uint8 x"),
    ],
)
def test_bad_type_strings(text: str, message: str) -> None:
    with pytest.raises(AbiError, match=None) as caught:
        parse_type(text)
    assert message in str(caught.value)


def test_dynamic_and_word_counts() -> None:
    assert parse_type("uint256[2][3]").words == 6
    assert not parse_type("(address,bytes32[2])").dynamic
    assert parse_type("(address,bytes)").dynamic
    assert parse_type("string[3]").words == 1
    assert parse_type("string[3]").min_words == 3
    assert parse_type("(uint8,(bool,int16)[2])").arrow == pa.struct(
        [
            ("c0", pa.uint8()),
            (
                "c1",
                pa.list_(pa.field("item", pa.struct([("c0", pa.bool_()), ("c1", pa.int16())])), 2),
            ),
        ]
    )


def test_event_signatures() -> None:
    e = parse_event(
        "event Swap(address indexed sender, (uint256 a, bytes b) indexed info, int24 tick)"
    )
    assert e.name == "Swap" and not e.anonymous
    assert [(p.name, p.type.name, p.indexed) for p in e.params] == [
        ("sender", "address", True),
        ("info", "(uint256,bytes)", True),
        ("tick", "int24", False),
    ]
    assert e.topic0 == keccak(b"Swap(address,(uint256,bytes),int24)")
    assert [f.type for f in e.fields] == [pa.binary(20), pa.binary(32), pa.int32()]
    assert parse_event("Transfer(address indexed, uint) anonymous").anonymous


def test_function_signatures() -> None:
    f = parse_function("function transfer(address to, uint256 amount) external returns (bool)")
    assert f.selector.hex() == "a9059cbb"
    assert [p.name for p in f.params] == ["to", "amount"]
    with pytest.raises(AbiError, match="function transfer has unnamed input parameter"):
        parse_function("transfer(address, uint256 amount)")
    with pytest.raises(AbiError, match="parse function signature"):
        parse_function("transfer(address to) banana")
