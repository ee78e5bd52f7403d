"""Whole-column hex decoding agrees with value-by-value decoding, and refuses bad columns."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from ampd.providers.evm_rpc import hexdecode

RNG = random.Random(7)


def quantities(bits: list[int], n: int = 500) -> list[str]:
    return [hex(RNG.getrandbits(RNG.choice(bits))) for _ in range(n)]


def hashes(width: int, n: int = 200) -> list[str]:
    return ["0x" + RNG.randbytes(width).hex() for _ in range(n)]


def with_nulls(values: list[str]) -> list[str | None]:
    return [None if RNG.random() < 0.3 else v for v in values]


def test_uint64_equals_int_parsing() -> None:
    values = quantities([1, 8, 40, 64]) + ["0x0", "0xffffffffffffffff", "0xABCdef"]
    assert hexdecode.uint64(values).to_pylist() == [int(v, 16) for v in values]
    sparse = with_nulls(values)
    got = hexdecode.uint64(sparse, nullable=True)
    assert got.to_pylist() == [None if v is None else int(v, 16) for v in sparse]


def test_decimal128_equals_int_parsing_up_to_38_digits() -> None:
    values = quantities([1, 64, 100, 126]) + [hex(10**38 - 1)]
    want = pa.array([int(v, 16) for v in values], pa.decimal128(38, 0))
    assert hexdecode.decimal128(values).equals(want)
    sparse = with_nulls(values)
    want = pa.array([None if v is None else int(v, 16) for v in sparse], pa.decimal128(38, 0))
    assert hexdecode.decimal128(sparse, nullable=True).equals(want)


@pytest.mark.parametrize("width", [20, 32])
def test_fixed_binary_equals_fromhex(width: int) -> None:
    values = hashes(width) + ["0x" + "AB" * width]
    want = [bytes.fromhex(v[2:]) for v in values]
    assert hexdecode.fixed_binary(values, width).to_pylist() == want
    sparse = with_nulls(values)
    got = hexdecode.fixed_binary(sparse, width, nullable=True).to_pylist()
    assert got == [None if v is None else bytes.fromhex(v[2:]) for v in sparse]
    assert hexdecode.fixed_binary([None] * 3, width, nullable=True).to_pylist() == [None] * 3


def test_binary_equals_fromhex() -> None:
    values = ["0x" + RNG.randbytes(RNG.randrange(0, 300)).hex() for _ in range(300)] + ["0x"]
    assert hexdecode.binary(values).to_pylist() == [bytes.fromhex(v[2:]) for v in values]


def test_quantity_bytes_pads_on_the_left() -> None:
    values = quantities([1, 200, 255, 256]) + ["0x0"]
    want = [int(v, 16).to_bytes(32, "big") for v in values]
    assert hexdecode.quantity_bytes(values, 32).to_pylist() == want


def test_empty_columns() -> None:
    assert hexdecode.uint64([]).to_pylist() == []
    assert hexdecode.decimal128([]).to_pylist() == []
    assert hexdecode.fixed_binary([], 32).to_pylist() == []
    assert hexdecode.binary([]).to_pylist() == []


@pytest.mark.parametrize(
    ("decode", "bad"),
    [
        (lambda v: hexdecode.uint64(v), "0x"),  # no digits
        (lambda v: hexdecode.uint64(v), "0x" + "1" * 17),  # beyond UInt64 (or zero-padded)
        (lambda v: hexdecode.uint64(v), "12"),  # no prefix
        (lambda v: hexdecode.uint64(v), "0x1g"),
        (lambda v: hexdecode.uint64(v), "0x1é"),
        (lambda v: hexdecode.uint64(v), None),
        (lambda v: hexdecode.decimal128(v), hex(10**38)),
        (lambda v: hexdecode.fixed_binary(v, 32), "0x" + "ab" * 31),
        (lambda v: hexdecode.fixed_binary(v, 32), "1x" + "ab" * 32),
        (lambda v: hexdecode.fixed_binary(v, 32), "0x" + "zz" * 32),
        (lambda v: hexdecode.fixed_binary(v, 32), None),
        (lambda v: hexdecode.binary(v), "0xabc"),  # odd digits
        (lambda v: hexdecode.binary(v), "ab"),
        (lambda v: hexdecode.binary(v), "0x0xab"),
        (lambda v: hexdecode.binary(v), 12),
        (lambda v: hexdecode.quantity_bytes(v, 32), "0x" + "1" * 65),
        (lambda v: hexdecode.quantity_bytes(v, 32), "0x"),
    ],
)
def test_one_bad_value_rejects_the_column(decode, bad) -> None:  # noqa: ANN001
    good = ["0x" + "11" * 32, "0x" + "22" * 32]
    assert decode([*good, bad]) is None
    assert decode([bad, *good]) is None
