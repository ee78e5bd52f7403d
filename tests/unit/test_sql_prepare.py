"""The planning step: finding the calls in SQL text, learning argument types from
DataFusion, the derived names and turning them back."""

from __future__ import annotations

import pyarrow as pa
import pytest
from datafusion import udf

from ampd.sql import error_text, prepare, public_name, restore_names
from ampd.sql.functions.prepare import parse_df_type, split_types
from ampd.sql.functions.sql_text import calls, literal, tokenize
from support.sqlfn import column, error, session

SIG = "Transfer(address indexed from, address indexed to, uint256 value)"


def test_tokenizer_keeps_strings_comments_and_quoted_names_whole() -> None:
    sql = "SELECT 'it''s -- not /* a */ comment', \"a\"\"b\" -- tail\n/* x /* nested */ y */ 1.5e3"
    kinds = [(t.kind, t.text) for t in tokenize(sql) if not t.trivia]
    assert kinds == [
        ("ident", "SELECT"),
        ("string", "'it''s -- not /* a */ comment'"),
        ("punct", ","),
        ("qident", '"a""b"'),
        ("number", "1.5e3"),
    ]
    assert tokenize(sql)[2].value == "it's -- not /* a */ comment"


def test_calls_are_found_outside_strings_and_comments_only() -> None:
    sql = (
        "SELECT shift_units(x, -18), 'shift_units(a, b)', \"shift_units\" -- shift_units(c)\n"
        "FROM t WHERE EVM_DECODE_HEX(evm_decode_hex) = /* evm_decode_hex(y) */ s.shift_units(1)"
    )
    found = calls(sql, {"shift_units", "evm_decode_hex"})
    assert [(c.name, len(c.args)) for c in found] == [("shift_units", 2), ("evm_decode_hex", 1)]
    assert literal(found[0].args[1]).text == "-18"
    assert literal(found[0].args[0]) is None


def test_literals() -> None:
    def lit(arg_sql: str):
        (call,) = calls(f"f({arg_sql})", {"f"})
        return literal(call.args[0])

    assert lit("'a''b'").text == "a'b"
    assert lit("(('x'))").text == "x"
    assert lit("NULL").kind == "null"
    assert lit("TRUE").df_type == "Boolean"
    assert lit("12").df_type == "Int64"
    assert lit("18446744073709551615").df_type == "UInt64"
    assert lit("1.5").df_type == "Float64"
    assert lit("X'00'").df_type == "Binary"
    assert lit("'a' || 'b'") is None
    assert lit("(1) + (2)") is None


def test_a_query_without_the_functions_is_returned_unchanged() -> None:
    ctx = session(t={"x": pa.array([1])})
    sql = "SELECT x, 'evm_decode_log(a)' FROM t -- evm_topic('x')"
    assert prepare(ctx, sql) == sql


def test_argument_types_are_learnt_from_datafusion() -> None:
    ctx = session(
        t={
            "s": pa.array(["1500"], pa.string()),
            "d": pa.array([15], pa.decimal128(20, 1)),
            "u": pa.array([2], pa.uint32()),
            "l": pa.array([[1, 2]], pa.list_(pa.field("x", pa.int16(), nullable=False))),
        }
    )
    sql = (
        "SELECT shift_units(s, -3) AS a, shift_units(d, u) AS b, "
        "shift_units(shift_units(s, 1), -1) AS c, evm_encode_type(l, 'uint8[]') AS e FROM t"
    )
    rewritten = prepare(ctx, sql)
    assert "shift_units(" not in rewritten and "shift_units__" in rewritten
    row = ctx.sql(rewritten).to_pylist()[0]
    assert row["a"] == "1.5" and row["b"] == "1500" and row["c"] == "1500"
    assert (
        row["e"]
        == bytes(31) + b"\x20" + bytes(31) + b"\x02" + bytes(31) + b"\x01" + bytes(31) + b"\x02"
    )


def test_calls_type_checked_after_planning_are_learnt_too() -> None:
    # DataFusion checks a call in a CTE's WHERE only in its analyzer, after planning.
    ctx = session(t={"v": pa.array([3, 4], pa.uint64()), "k": pa.array([1, 2])})
    sql = (
        "WITH x AS (SELECT v, k FROM t) SELECT k FROM x WHERE shift_units(v, 2) = '300' ORDER BY k"
    )
    assert column(ctx, sql) == [1]


def test_names_are_turned_back() -> None:
    ctx = session(t={"s": pa.array(["1"]), "a": pa.array([b"\x01" * 20], pa.binary(20))})
    frame = restore_names(
        ctx.sql(prepare(ctx, "SELECT shift_units(s, 2), evm_decode_hex(a) FROM t"))
    )
    assert frame.schema().names == ["shift_units(t.s,Int64(2))", "evm_decode_hex(t.a)"]
    assert public_name("x evm_decode_log__0123456789ab(a) shift_units__p3(b)") == (
        "x evm_decode_log(a) shift_units(b)"
    )


def test_the_decoded_struct_field_after_parentheses() -> None:
    ctx = session(t={"d": pa.array([bytes(31) + b"\x05"])})
    sql = "SELECT (evm_decode_params(d, 'f(uint8 amountIn)')).amountIn FROM t"
    assert column(ctx, sql) == [None]  # no selector: NULL struct


def test_errors_of_other_kinds_pass_through() -> None:
    ctx = session(t={"s": pa.array(["1"])})
    assert "missing_table" in error(ctx, "SELECT shift_units(s, 1) FROM missing_table")
    assert "No field named nope" in error(ctx, "SELECT shift_units(nope, 1) FROM t")
    # The probe plans read-only: a DDL statement is never run by prepare.
    sql = "CREATE VIEW v AS SELECT shift_units(s, 1) FROM t"
    prepare(ctx, sql)
    assert "v" not in ctx.catalog().schema().names()


def test_function_errors_are_found_in_datafusion_messages() -> None:
    ctx = session(t={"s": pa.array(["x"])})
    message = error(ctx, "SELECT shift_units(s, 1) FROM t")
    assert error_text(message) == (
        "shift_units: failed to convert String to BigDecimal: invalid digit found in string"
    )
    assert error_text("some other error") is None


@pytest.mark.parametrize(
    "arrow",
    [
        pa.int8(),
        pa.uint64(),
        pa.float32(),
        pa.decimal128(10, 2),
        pa.decimal256(76, 0),
        pa.binary(20),
        pa.binary(),
        pa.large_binary(),
        pa.string(),
        pa.string_view(),
        pa.bool_(),
        pa.list_(pa.int64()),
        pa.list_(pa.field("x", pa.int64(), nullable=False)),
        pa.list_(pa.binary(32), 3),
        pa.large_list(pa.string()),
        pa.struct([("a", pa.int32()), pa.field("b", pa.list_(pa.binary()), nullable=False)]),
    ],
)
def test_datafusion_type_names_parse_back(arrow: pa.DataType) -> None:
    """Each type as DataFusion names it in a refused call, parsed back to the same type."""
    ctx = session(t={"c": pa.array([], arrow)})
    ctx.register_udf(udf(lambda *a: a[0], [pa.null()] * 2, pa.null(), "immutable", "probe__x"))
    message = error(ctx, "SELECT probe__x(c) FROM t")
    shown = message.split("coercion from ", 1)[1].split(" to the signature", 1)[0]
    assert split_types(shown) == [shown]
    assert parse_df_type(shown) == arrow


def test_unknown_datafusion_types_stay_text() -> None:
    assert parse_df_type('Timestamp(µs, "UTC")') == 'Timestamp(µs, "UTC")'
    assert parse_df_type("List(Timestamp(s))") == "List(Timestamp(s))"
    assert split_types('Int64, Struct("a": Int8, "b": Utf8), Decimal128(10, 2)') == [
        "Int64",
        'Struct("a": Int8, "b": Utf8)',
        "Decimal128(10, 2)",
    ]
    ctx = session(t={"ts": pa.array([0], pa.timestamp("s"))})
    assert "shift_units: expected numeric type or Utf8 for first argument, got Timestamp(s)" in (
        error(ctx, "SELECT shift_units(ts, 1) FROM t")
    )


def test_same_text_calls_share_one_function() -> None:
    ctx = session(t={"s": pa.array(["1", "2"])})
    sql = "SELECT shift_units(s, 1) AS a, shift_units(s, 1) AS b FROM t"
    rewritten = prepare(ctx, sql)
    names = {t for t in rewritten.replace("(", " ").split() if t.startswith("shift_units__")}
    assert len(names) == 1
    assert ctx.sql(rewritten).to_pylist() == [{"a": "10", "b": "10"}, {"a": "20", "b": "20"}]
