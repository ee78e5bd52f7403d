"""Amp's plan rules on DataFusion plans in-process: reserved aliases, duplicate names, and
what a streaming query may do."""

from __future__ import annotations

import pyarrow as pa
import pytest
from datafusion import SessionContext

from ampd.sql.rules import (
    QueryRuleError,
    check_incremental,
    check_plan,
    check_streamable,
    has_joins,
)


@pytest.fixture
def ctx() -> SessionContext:
    ctx = SessionContext()
    for name in ("a", "b"):
        ctx.register_record_batches(name, [[pa.record_batch({"x": [1], "_block_num": [1]})]])
    return ctx


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT x FROM a",
        "SELECT _block_num, x FROM a",  # a column of the table, not an alias
        "SELECT a.x, b.x AS bx FROM a JOIN b ON a.x = b.x",
        "SELECT count(*) AS n FROM a",
        "SELECT unnest([1, 2]) AS v",
    ],
)
def test_plans_within_the_rules(ctx: SessionContext, sql: str) -> None:
    check_plan(ctx.sql(sql))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT x AS _x FROM a",
        "SELECT count(*) AS _n FROM a",
        "SELECT * FROM (SELECT x AS _inner FROM a) t",
    ],
)
def test_underscore_aliases_are_reserved(ctx: SessionContext, sql: str) -> None:
    with pytest.raises(QueryRuleError, match="column alias starting with '_'.*Please rename"):
        check_plan(ctx.sql(sql))


def test_duplicate_output_names_name_their_sources(ctx: SessionContext) -> None:
    with pytest.raises(QueryRuleError) as error:
        check_plan(ctx.sql("SELECT a.x, b.x FROM a JOIN b ON a.x = b.x"))
    assert str(error.value) == (
        "Duplicate field names detected in plan schema: [a.x and b.x]. "
        "Please alias your columns to be unique."
    )


def test_a_plan_thousands_of_levels_deep_is_checked(ctx: SessionContext) -> None:
    """A table of many files is a union per file (the local reader): no recursion limit."""
    frame = ctx.table("a")
    for _ in range(1_500):
        frame = frame.union(ctx.table("a"))
    ctx.register_view("many", frame)
    check_plan(ctx.sql("SELECT count(*) AS n FROM many"))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT x FROM a WHERE x > 0",
        "SELECT _block_num, count(*) AS n FROM a GROUP BY _block_num",
        "SELECT _block_num, x, count(*) AS n FROM a GROUP BY _block_num, x",
        "SELECT DISTINCT ON (_block_num) _block_num, x FROM a",
        "SELECT x FROM a UNION ALL SELECT x FROM b",
    ],
)
def test_incremental_plans_stream(ctx: SessionContext, sql: str) -> None:
    check_incremental(ctx.sql(sql))


@pytest.mark.parametrize(
    ("sql", "op"),
    [
        ("SELECT count(*) AS n FROM a", "Aggregate"),
        ("SELECT x, count(*) AS n FROM a GROUP BY x, _block_num", "Aggregate"),
        ("SELECT DISTINCT x FROM a", "Distinct"),
        ("SELECT DISTINCT ON (x, _block_num) x, _block_num FROM a", "Distinct"),
        ("SELECT x FROM a LIMIT 5", "Limit"),
        ("SELECT x FROM a ORDER BY x", "Sort"),
        ("SELECT x, row_number() OVER (ORDER BY x) AS r FROM a", "Window"),
        ("SELECT a.x FROM a LEFT JOIN b ON a.x = b.x", "Join(Left)"),
        ("SELECT a.x FROM a FULL JOIN b ON a.x = b.x", "Join(Full)"),
        ("SELECT x FROM a WHERE x NOT IN (SELECT x FROM b)", "Join(LeftAnti)"),
        ("SELECT (SELECT max(x) FROM b) AS m FROM a", "ScalarSubquery"),
        ("SELECT x FROM a WHERE x > (SELECT max(x) FROM b WHERE b.x = a.x)", "Aggregate"),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
            "SELECT n FROM r",
            "RecursiveQuery",
        ),
    ],
)
def test_non_incremental_plans_are_refused_with_amps_message(
    ctx: SessionContext, sql: str, op: str
) -> None:
    expected = (
        "non-incremental queries are not supported for streaming, "
        f"query contains non-incremental operation: {op}"
    )
    with pytest.raises(QueryRuleError) as refused:
        check_incremental(ctx.sql(sql))
    assert str(refused.value) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a.x FROM a JOIN b ON a._block_num = b._block_num",
        "SELECT x FROM a WHERE x IN (SELECT x FROM b)",
        "SELECT x FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.x = a.x)",
    ],
)
def test_inner_and_semi_joins_are_incremental(ctx: SessionContext, sql: str) -> None:
    frame = ctx.sql(sql)
    check_incremental(frame)
    check_streamable(frame, sql)
    assert has_joins(frame)


def test_a_join_streams_in_top_level_union_all_branches_only(ctx: SessionContext) -> None:
    joined = "SELECT a.x FROM a JOIN b ON a.x = b.x"
    for sql in (f"{joined} UNION ALL SELECT x FROM b", f"SELECT x FROM b UNION ALL {joined}"):
        frame = ctx.sql(sql)
        check_incremental(frame)
        check_streamable(frame, sql)  # each branch takes the join rule for its readings
    for sql in (
        f"SELECT x FROM ({joined} UNION ALL SELECT x FROM b) u",  # in a subquery
        f"WITH j AS ({joined}) SELECT x FROM j UNION ALL SELECT x FROM b",  # after a WITH
        f"{joined} INTERSECT SELECT x FROM b",
    ):
        frame = ctx.sql(sql)
        with pytest.raises(QueryRuleError, match="only as top-level UNION ALL branches"):
            check_streamable(frame, sql)
    unions = "SELECT x FROM a UNION ALL SELECT x FROM b"
    check_streamable(ctx.sql(unions), unions)  # a union without a join streams as it is
    assert not has_joins(ctx.sql("SELECT x FROM a UNION ALL SELECT x FROM b"))
