"""`POST /schema`: the output schemas of derived tables' SQL, as Amp's CLI asks for them.

Request (Amp's `SchemaRequest`), every field optional:
    {"tables": {name: sql}, "dependencies": {alias: "ns/name@version-or-hash"},
     "functions": {name: {"inputTypes", "outputType", "source"}}}
Answer: {"schemas": {name: {"arrow": {"fields": [{"name", "type", "nullable"}]}, "schema":
{"arrow": ...}, "networks": [...]}}}, each with `_block_num` first: Amp's server answers the
first form, Amp's published CLI reads the second. Only functions: `{"schemas": {}}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request

from ampd.controller.admin_api import ApiError, context, read_json
from ampd.controller.derived import DependencyNotFound, dependency_revisions
from ampd.datasets import arrow_types
from ampd.datasets.derived import DerivedManifestError, parse_derived, table_order
from ampd.datasets.manifest import ManifestValidationError
from ampd.sql.derived_schema import DerivedSchemaError, infer_schemas
from ampd.sql.references import table_references

router = APIRouter(tags=["schema"])

_FIELDS = ("tables", "dependencies", "functions")


@router.post("/schema")
async def analyze(request: Request) -> dict[str, Any]:
    body = await read_json(request, "INVALID_PAYLOAD_FORMAT")
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_PAYLOAD_FORMAT", "the body must be a JSON object")
    for key in _FIELDS:
        if not isinstance(body.get(key, {}), dict):
            raise ApiError(400, "INVALID_PAYLOAD_FORMAT", f"'{key}' must be a JSON object")
    tables: dict[str, Any] = body.get("tables", {})
    for name, sql in tables.items():
        if not isinstance(sql, str):
            raise ApiError(400, "INVALID_PAYLOAD_FORMAT", f"'tables.{name}' must be SQL text")
    functions = body.get("functions", {})
    if not tables and not functions:
        raise ApiError(
            400, "EMPTY_TABLES_AND_FUNCTIONS", "at least one table or function must be given"
        )
    # The same field rules as a manifest's (names, references, function types): checked by
    # the manifest parser on a manifest with placeholder schemas.
    try:
        checked = parse_derived(
            {
                "kind": "manifest",
                "dependencies": body.get("dependencies", {}),
                "functions": functions,
                "tables": {name: _placeholder(sql) for name, sql in tables.items()},
            }
        )
    except ManifestValidationError as exc:
        raise ApiError(400, "INVALID_PAYLOAD_FORMAT", str(exc)) from None
    except DerivedManifestError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    if not tables:
        return {"schemas": {}}
    try:
        deps = await dependency_revisions(context(request).registry, body.get("dependencies", {}))
    except DependencyNotFound as exc:
        raise ApiError(404, "DEPENDENCY_NOT_FOUND", str(exc)) from None
    try:
        schemas = await asyncio.to_thread(
            infer_schemas,
            tables,
            deps.tables,
            None,
            list(checked.functions.values()),
            deps.functions,
        )
    except (DerivedSchemaError, DerivedManifestError) as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    read = _networks_read(tables, deps.networks)
    try:
        return {"schemas": {name: _answer(schemas[name], read[name]) for name in sorted(schemas)}}
    except arrow_types.UnknownArrowType as exc:
        raise ApiError(500, "SCHEMA_INFERENCE", f"a planned column has {exc}") from None


def _placeholder(sql: str) -> dict[str, Any]:
    return {"input": {"sql": sql}, "schema": {"arrow": {"fields": [_PLACEHOLDER_FIELD]}}}


_PLACEHOLDER_FIELD = {"name": "_block_num", "type": "UInt64", "nullable": False}


def _answer(schema: pa.Schema, networks: list[str]) -> dict[str, Any]:
    """A table's entry in both forms Amp's clients read: its `TableSchema`
    (`{"arrow": ...}`, what Amp's server answers) and, for Amp's published CLI (npm
    @edgeandnode/amp), `{"schema": <TableSchema>, "networks": [...]}`. Each ignores the
    other's keys."""
    fields = [
        {"name": f.name, "type": arrow_types.to_json(f.type), "nullable": f.nullable}
        for f in schema
    ]
    table_schema = {"arrow": {"fields": fields}}
    return {**table_schema, "schema": table_schema, "networks": networks}


def _networks_read(
    sql_by_table: dict[str, str], networks: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The networks of the dependencies each table reads, its siblings' included."""
    order = table_order(sql_by_table)
    read: dict[str, list[str]] = {}
    for name in order:
        found: set[str] = set()
        for schema, table in table_references(sql_by_table[name]):
            if schema == "self":
                found.update(read.get(table, ()))
            else:
                found.update(networks.get(schema, ()))
        read[name] = sorted(found)
    return read
