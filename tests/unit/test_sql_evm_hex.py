"""evm_encode_hex / evm_decode_hex: Amp's examples, types and messages."""

from __future__ import annotations

import pyarrow as pa
import pytest

from support.sqlfn import column, error, one, session, table

WETH = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
HASH = "cb8f66bff7ba069c3938626df640d294fd9e2700671e4e567bcea4a6df2cb9ff"


def test_encode_hex_type_follows_the_literal() -> None:
    ctx = session()
    result = table(ctx, f"SELECT evm_encode_hex('{WETH}') AS a, evm_encode_hex('{HASH}') AS h")
    assert result.schema.field("a").type == pa.binary(20)
    assert result.schema.field("h").type == pa.binary(32)
    assert result.to_pylist() == [{"a": bytes.fromhex(WETH[2:]), "h": bytes.fromhex(HASH)}]
    assert one(ctx, f"SELECT evm_encode_hex('0X{HASH}')") == bytes.fromhex(HASH)


def test_encode_hex_filters_a_table() -> None:
    weth = bytes.fromhex(WETH[2:])
    ctx = session(logs={"address": pa.array([weth, b"\x00" * 20], pa.binary(20))})
    assert column(ctx, f"SELECT count(*) FROM logs WHERE address = evm_encode_hex('{WETH}')") == [1]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("'0x1234'", "evm_encode_hex: expected 20 or 32 bytes, got 2"),
        ("''", "evm_encode_hex: expected 20 or 32 bytes, got 0"),
        ("'0x123'", "evm_encode_hex: invalid hex string: odd number of digits"),
        ("'0xzz'", "evm_encode_hex: invalid hex string: invalid character 'z' at position 0"),
        ("NULL", "evm_encode_hex: input cannot be null"),
        ("s", "evm_encode_hex: expected scalar argument but got Utf8"),
    ],
)
def test_encode_hex_errors(argument: str, message: str) -> None:
    ctx = session(t={"s": pa.array([WETH])})
    assert message in error(ctx, f"SELECT evm_encode_hex({argument}) FROM t")


def test_decode_hex_writes_lowercase_prefixed_hex() -> None:
    address, digest = bytes.fromhex(WETH[2:]), bytes.fromhex(HASH)
    ctx = session(
        t={
            "a": pa.array([address, None, b"\x00" * 20], pa.binary(20)),
            "h": pa.array([digest, digest, None], pa.binary(32)),
        }
    )
    result = table(ctx, "SELECT evm_decode_hex(a) AS a, evm_decode_hex(h) AS h FROM t")
    assert result.schema.field("a").type == pa.string()
    assert result.column("a").to_pylist() == [WETH.lower(), None, "0x" + "00" * 20]
    assert result.column("h").to_pylist() == ["0x" + HASH, "0x" + HASH, None]
    sliced = column(ctx, "SELECT evm_decode_hex(a) FROM (SELECT a FROM t LIMIT 2 OFFSET 1)")
    assert sliced == [None, "0x" + "00" * 20]


def test_decode_hex_round_trip_and_wrong_types() -> None:
    ctx = session(t={"b": pa.array([b"\x01"], pa.binary())})
    assert one(ctx, f"SELECT evm_decode_hex(evm_encode_hex('{WETH}'))") == WETH.lower()
    assert "evm_decode_hex: expected FixedSizeBinary(20) or FixedSizeBinary(32), got Binary" in (
        error(ctx, "SELECT evm_decode_hex(b) FROM t")
    )
    assert "evm_decode_hex: expected 1 argument, got 0" in error(ctx, "SELECT evm_decode_hex()")
