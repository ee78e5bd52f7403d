"""In-process DataFusion sessions with the EVM SQL functions, for the function tests."""

from __future__ import annotations

import pyarrow as pa
from datafusion import SessionContext

from ampd.sql import prepare, register_functions, restore_names


def session(**tables: pa.Table | dict) -> SessionContext:
    """A session with the functions registered and `tables` (pyarrow tables or dicts of
    pyarrow arrays) registered under their keyword names."""
    ctx = SessionContext()
    register_functions(ctx)
    for name, table in tables.items():
        if isinstance(table, dict):
            table = pa.table(table)
        batches = table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        ctx.register_record_batches(name, [batches])
    return ctx


def frame(ctx: SessionContext, sql: str):  # noqa: ANN201 - a DataFrame
    return restore_names(ctx.sql(prepare(ctx, sql)))


def table(ctx: SessionContext, sql: str) -> pa.Table:
    return frame(ctx, sql).to_arrow_table()


def column(ctx: SessionContext, sql: str, index: int = 0) -> list:
    """The values of one result column."""
    return table(ctx, sql).column(index).to_pylist()


def one(ctx: SessionContext, sql: str):  # noqa: ANN201 - any value
    """The single value a one-row, one-column query returns."""
    values = column(ctx, sql)
    assert len(values) == 1, values
    return values[0]


def error(ctx: SessionContext, sql: str) -> str:
    """The message of the error planning or running `sql` raises."""
    try:
        table(ctx, sql)
    except Exception as exc:  # noqa: BLE001 - DataFusion raises one type for all errors
        return str(exc)
    raise AssertionError(f"no error from {sql!r}")
