"""Amp's plan rules on DataFusion plans in-process: reserved aliases, duplicate names."""

from __future__ import annotations

import pyarrow as pa
import pytest
from datafusion import SessionContext

from ampd.sql.rules import QueryRuleError, check_plan


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
