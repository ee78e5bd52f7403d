"""The output schema of each table of a derived dataset, planned from its SQL.

A derived table's SQL reads its dependencies' tables by alias (`eth.logs`) and its sibling
tables as `self.<table>`. Each table is planned, in build order, in a DataFusion session
whose catalog holds one schema per alias with empty tables of the dependencies' schemas, and
`self` with the siblings planned before it: no file is read. The planned schema gets Amp's
`_block_num` (UInt64, not null) in front unless the SQL already selects one, as Amp's
`POST /schema` does.

Errors carry Amp's codes: INVALID_TABLE_SQL (does not parse, or more than one statement),
NO_TABLE_REFERENCES (reads no table), INVALID_PLAN (an unknown table, column or function, a
type error), NON_INCREMENTAL_QUERY (Amp's incremental rules, its inner and semi joins
allowed), and DerivedManifestError's codes for the tables' order. With the declared
schemas, a table whose planned schema differs from its declared one is SCHEMA_MISMATCH:
Amp's docs promise that check, its code does not make it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
from datafusion import SessionConfig, SessionContext, SQLOptions
from datafusion.catalog import Catalog, Schema

from ampd.datasets.derived import table_order
from ampd.sql.functions import (
    FunctionError,
    prepare,
    public_name,
    register_functions,
    restore_names,
)
from ampd.sql.functions.eth_call import EthCaller
from ampd.sql.functions.js import JsFunction, js_udf
from ampd.sql.rules import QueryRuleError, check_incremental, plan_nodes

__all__ = ["BLOCK_NUM", "DerivedSchemaError", "infer_schemas", "js_functions"]

BLOCK_NUM = "_block_num"
_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_PARSE_ERRORS = ("ParserError", "SQL error", "only supports a single SQL statement")

TableSchemas = Mapping[str, pa.Schema]


class DerivedSchemaError(ValueError):
    """A derived table whose SQL cannot give its schema; `code` is Amp's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def infer_schemas(
    sql_by_table: Mapping[str, str],
    dependencies: Mapping[str, TableSchemas],
    declared: TableSchemas | None = None,
    functions: Sequence[JsFunction] = (),
    dependency_functions: Mapping[str, Sequence[JsFunction]] | None = None,
) -> dict[str, pa.Schema]:
    """Each table's planned schema (`_block_num` first), planned in build order.

    `dependencies`: alias -> that dataset's tables and schemas. With `declared` (a
    manifest's schemas), later tables see their siblings' declared schemas, as a
    materialization writes them, and each planned schema must match its declared one.
    `functions`: the dataset's JavaScript functions, which its SQL calls as `self.<name>`;
    `dependency_functions`: alias -> a derived dependency's, called as `<alias>.<name>`
    (planned with their declared types, never run here).
    Raises DerivedSchemaError or DerivedManifestError."""
    planned: dict[str, pa.Schema] = {}
    named = [*js_functions(dependency_functions or {}), *((f"self.{f.name}", f) for f in functions)]
    for name in table_order(sql_by_table):
        siblings = {t: (declared or planned)[t] for t in planned}
        schema = _plan(name, sql_by_table[name], {**dependencies, "self": siblings}, named)
        if declared is not None:
            _check_declared(name, declared[name], schema)
        planned[name] = schema
    return planned


def js_functions(by_alias: Mapping[str, Sequence[JsFunction]]) -> list[tuple[str, JsFunction]]:
    """(SQL name, function) of each dependency's JavaScript functions: `<alias>.<name>`."""
    return [(f"{alias}.{fn.name}", fn) for alias, fns in by_alias.items() for fn in fns]


def _plan(
    name: str,
    sql: str,
    schemas: Mapping[str, TableSchemas],
    functions: Sequence[tuple[str, JsFunction]],
) -> pa.Schema:
    ctx = SessionContext(SessionConfig().with_default_catalog_and_schema("datafusion", "public"))
    catalog = Catalog.memory_catalog()
    for alias, tables in schemas.items():
        schema = Schema.memory_schema()
        for table, table_schema in tables.items():
            schema.register_table(table, ctx.from_arrow(table_schema.empty_table()).into_view())
        catalog.register_schema(alias, schema)
    catalog.register_schema("public", Schema.memory_schema())
    ctx.register_catalog_provider("datafusion", catalog)
    register_functions(ctx)
    try:
        for sql_name, fn in functions:
            ctx.register_udf(js_udf(fn, sql_name))
        # An eth_call is planned (its types checked) but never run here.
        prepared = prepare(ctx, sql, lambda site: EthCaller([]))
        frame = restore_names(ctx.sql_with_options(prepared, _OPTIONS))
    except FunctionError as exc:
        message = public_name(str(exc))
        raise DerivedSchemaError("INVALID_PLAN", f"table {name!r}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - DataFusion raises one exception type for all
        message = " ".join(str(exc).split())[:2000]
        if any(marker in message for marker in _PARSE_ERRORS):
            raise DerivedSchemaError(
                "INVALID_TABLE_SQL", f"invalid SQL for table {name!r}: {message}"
            ) from None
        raise DerivedSchemaError("INVALID_PLAN", f"table {name!r}: {message}") from None
    if not any(type(n.to_variant()).__name__ == "TableScan" for n in plan_nodes(frame)):
        raise DerivedSchemaError(
            "NO_TABLE_REFERENCES", f"table {name!r} does not read any dependency or sibling table"
        )
    try:
        check_incremental(frame)
    except QueryRuleError as exc:
        raise DerivedSchemaError(
            "NON_INCREMENTAL_QUERY", f"table {name!r} contains non-incremental SQL: {exc}"
        ) from None
    schema = frame.schema()
    if BLOCK_NUM not in schema.names:
        schema = pa.schema([pa.field(BLOCK_NUM, pa.uint64(), nullable=False), *schema])
    return schema


def _check_declared(name: str, declared: pa.Schema, planned: pa.Schema) -> None:
    """Same column names in the same order, same types; a column the SQL may leave null
    must not be declared not null (a declared nullable one may come out never null)."""
    if declared.names != planned.names:
        raise DerivedSchemaError(
            "SCHEMA_MISMATCH",
            f"table {name!r}: declared columns {declared.names}, its SQL gives {planned.names}",
        )
    for want, got in zip(declared, planned, strict=True):
        if want.type != got.type:
            raise DerivedSchemaError(
                "SCHEMA_MISMATCH",
                f"table {name!r}, column {want.name!r}: declared {want.type}, "
                f"its SQL gives {got.type}",
            )
        if got.nullable and not want.nullable:
            raise DerivedSchemaError(
                "SCHEMA_MISMATCH",
                f"table {name!r}, column {want.name!r}: declared not null, its SQL may give nulls",
            )
