"""shift_units against Python's exact decimal arithmetic, Amp's examples and its tests."""

from __future__ import annotations

import random
from decimal import Decimal, localcontext

import pyarrow as pa
import pytest

from support.sqlfn import column, error, one, session, table


def exact(text: str | None, units: int) -> str | None:
    """Independent reference: the shifted value as plain text without trailing zeros."""
    if text is None:
        return None
    with localcontext() as c:
        c.prec = 500
        value = (Decimal(text) * Decimal(10) ** units).normalize()
    out = format(value, "f")
    return "0" if out in ("0", "-0") else out


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Amp's docs
        ("shift_units('1.5', 18)", "1500000000000000000"),
        ("shift_units('1500000000000000000', -18)", "1.5"),
        ("shift_units('100', 6)", "100000000"),
        ("shift_units('100000000', -6)", "100"),
        # Amp's tests
        ("shift_units('1.376988483056381409', 18)", "1376988483056381409"),
        ("shift_units('123.456', 0)", "123.456"),
        ("shift_units('1.5', -18)", "0.0000000000000000015"),
        ("shift_units(10, 3)", "10000"),
        ("shift_units(arrow_cast(10, 'Float32'), 3)", "10000"),
        ("shift_units(10.0, 3)", "10000"),
        ("shift_units(arrow_cast(10, 'Decimal128(38, 0)'), 3)", "10000"),
        ("shift_units(shift_units('28998036497399455000', -18), 18)", "28998036497399455000"),
        # other types and forms
        ("shift_units(arrow_cast(150, 'Decimal128(10, 2)'), 1)", "1500"),
        ("shift_units(arrow_cast(-7, 'Int8'), -2)", "-0.07"),
        ("shift_units(arrow_cast(18446744073709551615, 'UInt64'), -19)", "1.8446744073709551615"),
        ("shift_units('-0.000', 5)", "0"),
        ("shift_units('1e3', -1)", "100"),
        ("shift_units('.5', 1)", "5"),
        ("shift_units('007', 0)", "7"),
        ("shift_units('12', '3')", "12000"),
        ("shift_units('5', arrow_cast(2, 'UInt8'))", "500"),
        ("shift_units(0.1, 1)", "1"),
        ("shift_units(arrow_cast(0.1, 'Float32'), 2)", "10"),
    ],
)
def test_values(sql: str, expected: str) -> None:
    assert one(session(), f"SELECT {sql}") == expected


def test_integer_text_columns_match_exact_arithmetic() -> None:
    rng = random.Random(11)
    values: list[str | None] = [None, "0", "-5", str(2**256 - 1), "-" + str(2**255)]
    for _ in range(400):
        digits = rng.randint(1, 78)
        v = rng.randint(10 ** (digits - 1), 10**digits - 1) * 10 ** rng.randint(0, 5)
        values.append(str(v) if rng.random() < 0.8 else str(-v))
    values += ["1.25", "-3.500", "10e-2"]
    ctx = session(t={"v": pa.array(values, pa.string())})
    for units in (-32, -18, -6, -1, 0, 1, 6, 18, 32):
        got = column(ctx, f"SELECT shift_units(v, {units}) FROM t")
        assert got == [exact(v, units) for v in values], units


def test_units_that_differ_per_row_keep_every_digit() -> None:
    big = str(2**256 - 1)
    ctx = session(
        t={
            "v": pa.array([big, big, "1.5" + "0" * 60], pa.string()),
            "u": pa.array([-18, 3, -1], pa.int64()),
            "d": pa.array([10**70, 1, 2], pa.decimal256(76, 2)),
        }
    )
    assert column(ctx, "SELECT shift_units(v, u) FROM t") == [
        exact(big, -18),
        exact(big, 3),
        exact("1.5", -1),
    ]
    assert column(ctx, "SELECT shift_units(d, u) FROM t") == [
        exact(str(10**70), -18),
        exact("1", 3),
        exact("2", -1),
    ]


def test_numeric_columns() -> None:
    ctx = session(
        t={
            "i": pa.array([1, -2, None], pa.int32()),
            "u": pa.array([2**64 - 1, 0, 5], pa.uint64()),
            "d": pa.array([Decimal("1.50"), Decimal("-0.01"), None], pa.decimal128(10, 2)),
            "w": pa.array([10**70, -1, 0], pa.decimal256(76, 0)),
            "f": pa.array([0.5, None, 1e20], pa.float64()),
            "n": pa.array([-1, None, 2], pa.int64()),
        }
    )
    result = table(
        ctx,
        "SELECT shift_units(i, 2) AS i, shift_units(u, -3) AS u, shift_units(d, 2) AS d, "
        "shift_units(w, -32) AS w, shift_units(f, 1) AS f, shift_units('7', n) AS n FROM t",
    ).to_pydict()
    assert result["i"] == ["100", "-200", None]
    assert result["u"] == ["18446744073709551.615", "0", "0.005"]
    assert result["d"] == ["150", "-1", None]
    assert result["w"] == [str(10**38), "-0." + "0" * 31 + "1", "0"]
    assert result["f"] == ["5", None, "1000000000000000000000"]
    # A NULL in a units column counts as 1 (as in Amp).
    assert result["n"] == ["0.7", "70", "700"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("shift_units('1', 33)", "shift_units: units must be between -32 and 32 (got 33)"),
        (
            "shift_units('abc', 18)",
            "shift_units: failed to parse value: invalid digit found in string",
        ),
        (
            "shift_units(s, 18) FROM t",
            "shift_units: failed to convert String to BigDecimal: invalid digit found in string",
        ),
        (
            "shift_units('1', 'x')",
            "shift_units: failed to parse integer: invalid digit found in string",
        ),
        (
            "shift_units(X'01', 1)",
            "shift_units: expected numeric type or Utf8 for first argument, got Binary",
        ),
        (
            "shift_units(NULL, 1)",
            "shift_units: expected numeric type or Utf8 for first argument, got Null",
        ),
        (
            "shift_units('1', 1.5)",
            "shift_units: expected numeric type for second argument, got Float64",
        ),
        (
            "shift_units('1', NULL)",
            "shift_units: expected numeric type for second argument, got Null",
        ),
        ("shift_units('1')", "shift_units: expected 2 arguments, but got 1"),
    ],
)
def test_errors(sql: str, message: str) -> None:
    ctx = session(t={"s": pa.array(["not_a_number"])})
    assert message in error(ctx, f"SELECT {sql}")


def test_large_units_ignored_for_null_values_and_zero_units() -> None:
    ctx = session(t={"v": pa.array([None], pa.string())})
    assert column(ctx, "SELECT shift_units(v, 40) FROM t") == [None]
    assert one(session(), "SELECT shift_units('1.10', 0)") == "1.1"
