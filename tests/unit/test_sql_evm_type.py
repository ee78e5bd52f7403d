"""evm_decode_type / evm_encode_type against encodings made by eth-abi's encoder, for
every Solidity type family and Amp's Arrow type for each integer width."""

from __future__ import annotations

import random
from decimal import Decimal

import eth_abi
import numpy as np
import pyarrow as pa
import pytest

from ampd.sql.functions.abi_decode import int_value
from ampd.sql.functions.abi_types import parse_type
from ampd.sql.functions.errors import AbiError
from ampd.sql.functions.words import decode_words
from support.sqlfn import column, error, one, session, table

WIDTHS = range(8, 257, 8)


# Amp's table by bit width, written out: (signed, unsigned) Arrow type.
AMP_ARROW = {
    8: (pa.int8(), pa.uint8()),
    16: (pa.int16(), pa.uint16()),
    **dict.fromkeys((24, 32), (pa.int32(), pa.uint32())),
    **dict.fromkeys(range(40, 65, 8), (pa.int64(), pa.uint64())),
    **dict.fromkeys(range(72, 121, 8), (pa.decimal128(38, 0),) * 2),
    **dict.fromkeys(range(128, 249, 8), (pa.decimal256(76, 0),) * 2),
    256: (pa.string(), pa.string()),
}


def as_int(value):
    return int(value) if isinstance(value, (Decimal, str)) else value


def decode_columns(type_values: list[tuple[str, object]]) -> pa.Table:
    """One query decoding one column per (type, value), each encoded by eth-abi."""
    data = {f"c{i}": pa.array([eth_abi.encode([t], [v])]) for i, (t, v) in enumerate(type_values)}
    ctx = session(t=data)
    select = ", ".join(f"evm_decode_type(c{i}, '{t}')" for i, (t, _) in enumerate(type_values))
    return table(ctx, f"SELECT {select} FROM t")


@pytest.mark.parametrize("signed", [False, True])
def test_every_integer_width_has_amps_arrow_type_and_exact_values(signed: bool) -> None:
    cases = []
    for bits in WIDTHS:
        name = f"{'int' if signed else 'uint'}{bits}"
        if signed:
            cases += [(name, -(1 << (bits - 1))), (name, (1 << (bits - 1)) - 1), (name, -1)]
        else:
            cases += [(name, (1 << bits) - 1), (name, 0), (name, 1 << (bits - 1))]
    result = decode_columns(cases)
    for i, (name, value) in enumerate(cases):
        bits = int(name.lstrip("uint"))
        assert result.schema.field(i).type == AMP_ARROW[bits][0 if signed else 1], name
        got = result.column(i).to_pylist()[0]
        assert as_int(got) == value, (name, got)
        if bits == 256:
            assert got == str(value)


def test_static_types_decode() -> None:
    cases = [
        ("address", "0x" + "ab" * 20),
        ("bool", True),
        ("bool", False),
        ("bytes32", b"\x01" * 32),
        ("uint8[3]", [1, 2, 255]),
        ("(uint256,address,bool)", (7, "0x" + "11" * 20, True)),
        ("(int8,(bool,bytes2)[2])", (-3, [(True, b"ab"), (False, b"cd")])),
        ("int24[2][2]", [[-1, 2], [3, -(1 << 23)]]),
    ]
    cases += [(f"bytes{n}", bytes(range(1, n + 1))) for n in range(1, 33)]
    result = decode_columns(cases)
    got = [result.column(i).to_pylist()[0] for i in range(len(cases))]
    assert got[0] == bytes.fromhex("ab" * 20)
    assert result.schema.field(0).type == pa.binary(20)
    assert got[1:4] == [True, False, b"\x01" * 32]
    assert got[4] == [1, 2, 255]
    assert result.schema.field(4).type == pa.list_(pa.field("item", pa.uint8()), 3)
    assert got[5] == {"c0": "7", "c1": b"\x11" * 20, "c2": True}
    assert got[6] == {"c0": -3, "c1": [{"c0": True, "c1": b"ab"}, {"c0": False, "c1": b"cd"}]}
    assert got[7] == [[-1, 2], [3, -(1 << 23)]]
    for i, n in enumerate(range(1, 33), start=8):
        assert result.schema.field(i).type == pa.binary(n)
        assert got[i] == bytes(range(1, n + 1))


def test_dynamic_types_decode() -> None:
    cases = [
        ("bytes", b"\x00\xff" * 40),
        ("bytes", b""),
        ("string", "héllo wörld"),
        ("uint256[]", [1, 2, (1 << 256) - 1]),
        ("string[]", ["a", "", "ccc"]),
        ("string[2]", ["x", "y"]),
        ("bytes[]", []),
        ("(int256,int8,string[])", (1, 2, ["str1", "str2", "str3"])),
        ("(uint256,(address,string)[])[]", [(5, [("0x" + "22" * 20, "in")]), (6, [])]),
        ("(bytes,uint16)", (b"xyz", 65535)),
    ]
    result = decode_columns(cases)
    got = [result.column(i).to_pylist()[0] for i in range(len(cases))]
    assert got[0] == b"\x00\xff" * 40
    assert got[1] == b""
    assert got[2] == "héllo wörld"
    assert got[3] == ["1", "2", str((1 << 256) - 1)]
    assert got[4] == ["a", "", "ccc"]
    assert got[5] == ["x", "y"]
    assert got[6] == []
    # Amp's docs: { "c0": "1", "c1": 2, "c2": ["str1", "str2", "str3"] }
    assert got[7] == {"c0": "1", "c1": 2, "c2": ["str1", "str2", "str3"]}
    assert got[8] == [
        {"c0": "5", "c1": [{"c0": b"\x22" * 20, "c1": "in"}]},
        {"c0": "6", "c1": []},
    ]
    assert got[9] == {"c0": b"xyz", "c1": 65535}


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def decode_rows(type_text: str, rows: list[bytes | None]) -> list:
    ctx = session(t={"d": pa.array(rows, pa.binary())})
    return column(ctx, f"SELECT evm_decode_type(d, '{type_text}') FROM t")


def test_null_short_and_malformed_data_decode_to_null() -> None:
    assert decode_rows("uint256", [None, b"\x00" * 31, b"", word(5) + b"extra"]) == [
        None,
        None,
        None,
        "5",
    ]
    assert decode_rows("(uint256,bool)", [word(1)]) == [None]
    good = eth_abi.encode(["string"], ["abc"])
    dirty_offset = b"\x01" + good[1:]  # top bytes of the offset word must be zero
    far_offset = word(1 << 20) + good[32:]
    long_length = good[:32] + word(1000) + good[64:]
    assert decode_rows("string", [good, dirty_offset, far_offset, long_length]) == [
        "abc",
        None,
        None,
        None,
    ]
    too_many = word(32) + word(5) + word(1) + word(2)  # five items, two words of them
    assert decode_rows("uint8[]", [too_many]) == [None]


def test_lenient_word_decoding_follows_amp() -> None:
    # Dirty bytes above an address and a bool other than 0/1 decode (Amp's decoder does
    # not validate them); a string that is not UTF-8 gets replacement characters.
    dirty = b"\xee" * 12 + b"\x01" * 20
    assert decode_rows("address", [dirty]) == [b"\x01" * 20]
    assert decode_rows("bool", [word(2), word(0)]) == [True, False]
    bad_utf8 = word(32) + word(2) + b"\xff\xfe" + bytes(30)
    assert decode_rows("string", [bad_utf8]) == ["\ufffd\ufffd"]


def test_values_beyond_the_arrow_type_are_amps_errors() -> None:
    ctx = session(t={"d": pa.array([word(256)], pa.binary())})
    assert "evm_decode_type: error converting uint8: Uint<256> value is too large for u8" in error(
        ctx, "SELECT evm_decode_type(d, 'uint8') FROM t"
    )
    ctx = session(t={"d": pa.array([word(128)], pa.binary())})
    assert (
        "evm_decode_type: error converting int8: output of range integer conversion attempted"
        in error(ctx, "SELECT evm_decode_type(d, 'int8') FROM t")
    )
    ctx = session(t={"d": pa.array([word(10**38)], pa.binary())})
    assert (
        f"error converting uint72: Invalid argument error: {10**38} is too large to store in a "
        f"Decimal128 of precision 38. Max is {10**38 - 1}"
    ) in error(ctx, "SELECT evm_decode_type(d, 'uint72') FROM t")
    ctx = session(t={"d": pa.array([word(1 << 127)], pa.binary())})
    assert "error converting uint72: Uint<256> value is too large for i128" in error(
        ctx, "SELECT evm_decode_type(d, 'uint72') FROM t"
    )
    # uint128..uint248 go through a signed 256-bit decimal: all-ones is -1 there (as in Amp).
    assert decode_rows("uint128", [b"\xff" * 32]) == [Decimal(-1)]


def test_decode_type_planning_errors() -> None:
    ctx = session(t={"d": pa.array([b""], pa.binary()), "s": pa.array(["uint8"])})
    assert "failed to parse Solidity type: invalid size for type: uint7" in error(
        ctx, "SELECT evm_decode_type(d, 'uint7') FROM t"
    )
    assert "evm_decode_type: expected scalar argument for the Solidity type" in error(
        ctx, "SELECT evm_decode_type(d, s) FROM t"
    )
    assert "expected Utf8, got Int64" in error(ctx, "SELECT evm_decode_type(d, 5) FROM t")
    assert "cannot convert solidity type function to arrow data type" in error(
        ctx, "SELECT evm_decode_type(d, 'function') FROM t"
    )


def test_encode_type_matches_eth_abi() -> None:
    address = bytes.fromhex("c02aaa39b223fe8d0a0e5c4f27ead9083c756cc2")
    ctx = session(
        t={
            "a": pa.array([address, None], pa.binary(20)),
            "n": pa.array([-5, 7], pa.int64()),
            "u": pa.array([300, 1], pa.uint16()),
            "h": pa.array([b"\x09" * 32, b"\x08" * 32], pa.binary(32)),
            "b": pa.array([b"payload", b""], pa.binary()),
            "s": pa.array(["text", "é"], pa.string()),
            "l": pa.array([[1, 2], []], pa.list_(pa.int64())),
        }
    )
    rows = table(
        ctx,
        "SELECT evm_encode_type(a, 'address'), evm_encode_type(n, 'int256'), "
        "evm_encode_type(u, 'uint16'), evm_encode_type(h, 'bytes32'), "
        "evm_encode_type(b, 'bytes'), evm_encode_type(s, 'string'), "
        "evm_encode_type(l, 'int64[]') FROM t",
    ).to_pylist()
    values = [list(r.values()) for r in rows]
    assert values[0] == [
        eth_abi.encode(["address"], [address]),
        eth_abi.encode(["int256"], [-5]),
        eth_abi.encode(["uint16"], [300]),
        eth_abi.encode(["bytes32"], [b"\x09" * 32]),
        eth_abi.encode(["bytes"], [b"payload"]),
        eth_abi.encode(["string"], ["text"]),
        eth_abi.encode(["int64[]"], [[1, 2]]),
    ]
    assert values[1][0] is None  # a NULL value encodes as NULL
    assert values[1][6] == eth_abi.encode(["int64[]"], [[]])


def test_encode_type_literals_and_round_trip() -> None:
    ctx = session()
    # Amp's docs: evm_encode_type(12345, 'uint256') and (true, 'bool').
    assert one(ctx, "SELECT evm_encode_type(12345, 'uint256')") == eth_abi.encode(
        ["uint256"], [12345]
    )
    assert one(ctx, "SELECT evm_encode_type(true, 'bool')") == eth_abi.encode(["bool"], [True])
    decoded = one(
        ctx,
        "SELECT evm_decode_type(encoded, '(int256, int8, string[])') FROM (SELECT "
        "evm_encode_type(struct(1, 2, ['str1', 'str2', 'str3']), '(int256, int8, string[])') "
        "AS encoded)",
    )
    assert decoded == {"c0": "1", "c1": 2, "c2": ["str1", "str2", "str3"]}
    assert one(ctx, "SELECT evm_encode_type(struct(1, 'a'), '(uint8,string)')") == eth_abi.encode(
        ["(uint8,string)"], [(1, "a")]
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("evm_encode_type('5', 'uint256')", "cannot convert string to solidity type uint256"),
        (
            "evm_encode_type(300, 'int8')",
            "cannot convert int to solidity int8: 300 not in [-128, 127]",
        ),
        (
            "evm_encode_type(-1, 'uint8')",
            "cannot convert int to solidity uint8: -1 not in [0, 256)",
        ),
        ("evm_encode_type(1, 'address')", "expected int type, got address"),
        ("evm_encode_type(true, 'uint8')", "cannot convert boolean to solidity type uint8"),
        ("evm_encode_type(X'00', 'string')", "cannot convert bytes to solidity type string"),
        ("evm_encode_type(1.5, 'uint8')", "Unsupported type Float64 for Solidity type uint8"),
        (
            "evm_encode_type(arrow_cast(1.5, 'Decimal128(10, 2)'), 'uint8')",
            "Unsupported type Decimal128(10, 2) for Solidity type uint8",
        ),
        (
            "evm_encode_type(arrow_cast(X'00', 'FixedSizeBinary(1)'), 'bytes2')",
            "cannot convert fixed size binary of size 1 to Solidity fixed bytes of size 2",
        ),
        (
            "evm_encode_type(struct(1), '(uint8,uint8)')",
            "cannot convert struct of size 1 to solidity type (uint8,uint8)",
        ),
        ("evm_encode_type([1], 'uint8')", "cannot convert list to solidity type uint8"),
        (
            "evm_encode_type(1, 'uint7')",
            "failed to parse Solidity type: invalid size for type: uint7",
        ),
        ("evm_encode_type(1, 'uint8', 'x')", "evm_encode_type: expected at 2 arguments, but got 3"),
    ],
)
def test_encode_type_errors_are_amps(sql: str, message: str) -> None:
    assert message in error(session(), f"SELECT {sql}")


def test_encode_type_errors_wait_for_a_row() -> None:
    # Amp converts row by row, so no row means no error.
    ctx = session(t={"s": pa.array([], pa.string())})
    assert column(ctx, "SELECT evm_encode_type(s, 'uint256') FROM t") == []


def test_column_and_row_decoders_agree_on_every_width() -> None:
    """The numpy path (static values) and the row path (inside dynamic values) give the
    same value or the same error for any word, including words out of range."""
    rng = random.Random(5)
    samples = [0, 1, (1 << 256) - 1, 1 << 255, 10**38, 10**38 - 1, 10**76, (1 << 256) - 10**76]
    samples += [rng.getrandbits(rng.choice([8, 16, 64, 128, 200, 256])) for _ in range(40)]
    for kind in ("uint", "int"):
        for bits in WIDTHS:
            t = parse_type(f"{kind}{bits}")
            for raw in samples:
                words = np.frombuffer(raw.to_bytes(32, "big"), np.uint8).reshape(1, 32)
                try:
                    row = ("value", int_value(raw, t))
                except AbiError as exc:
                    row = ("error", str(exc))
                try:
                    got = decode_words(words, t, np.ones(1, bool)).to_pylist()[0]
                    numpy_path = ("value", int(got))
                except AbiError as exc:
                    numpy_path = ("error", str(exc))
                if row[0] == "value":
                    row = ("value", int(row[1]))
                assert row == numpy_path, (t.name, raw)


@pytest.mark.parametrize("signed", [False, True])
def test_int256_text_at_the_64_bit_edges(signed: bool) -> None:
    """256-bit words become text through a 64-bit path when every valid one fits and through
    decimals otherwise: each value next to the edges is its exact decimal text either way,
    and a row that is not valid is NULL whatever its bytes."""
    from ampd.sql.functions.words import int_text

    if signed:
        edges = [0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 63, -(1 << 63) - 1, (1 << 255) - 1]
        edges += [-(1 << 255), 10**38, -(10**38)]
    else:
        edges = [0, 1, (1 << 64) - 1, 1 << 64, (1 << 63), 10**38, (1 << 256) - 1]

    def words_of(values: list[int]) -> np.ndarray:
        raw = b"".join(v.to_bytes(32, "big", signed=signed) for v in values)
        return np.frombuffer(raw, np.uint8).reshape(len(values), 32)

    for value in edges:
        # Alone, with a small neighbour, and as the row that is not valid.
        got = int_text(words_of([value, 7]), signed, np.array([True, True]))
        assert got.to_pylist() == [str(value), "7"]
        masked = int_text(words_of([7, value]), signed, np.array([True, False]))
        assert masked.to_pylist() == ["7", None]
    every = int_text(words_of(edges), signed, np.ones(len(edges), bool))
    assert every.to_pylist() == [str(v) for v in edges]
