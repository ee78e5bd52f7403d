"""`POST /schema`: the output schemas of derived tables' SQL, as Amp's CLI asks for them.

Request (Amp's `SchemaRequest`), every field optional:
    {"tables": {name: sql}, "dependencies": {alias: "ns/name@version-or-hash"},
     "functions": {name: {"inputTypes", "outputType", "source"}}}
Answer: {"schemas": {name: {"arrow": {"fields": [{"name", "type", "nullable"}]}}}}, each
with `_block_num` first. Only functions: `{"schemas": {}}` (nothing to plan).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request

from ampd.controller.admin_api import ApiError, context, read_json
from ampd.controller.derived import DependencyNotFound, dependency_tables
from ampd.datasets import arrow_types
from ampd.datasets.derived import DerivedManifestError, parse_derived
from ampd.datasets.manifest import ManifestValidationError
from ampd.sql.derived_schema import DerivedSchemaError, infer_schemas

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
        parse_derived(
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
        deps = await dependency_tables(context(request).registry, body.get("dependencies", {}))
    except DependencyNotFound as exc:
        raise ApiError(404, "DEPENDENCY_NOT_FOUND", str(exc)) from None
    try:
        schemas = await asyncio.to_thread(infer_schemas, tables, deps)
    except (DerivedSchemaError, DerivedManifestError) as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    try:
        return {"schemas": {name: _schema_json(schemas[name]) for name in sorted(schemas)}}
    except arrow_types.UnknownArrowType as exc:
        raise ApiError(500, "SCHEMA_INFERENCE", f"a planned column has {exc}") from None


def _placeholder(sql: str) -> dict[str, Any]:
    return {"input": {"sql": sql}, "schema": {"arrow": {"fields": [_PLACEHOLDER_FIELD]}}}


_PLACEHOLDER_FIELD = {"name": "_block_num", "type": "UInt64", "nullable": False}


def _schema_json(schema: pa.Schema) -> dict[str, Any]:
    fields = [
        {"name": f.name, "type": arrow_types.to_json(f.type), "nullable": f.nullable}
        for f in schema
    ]
    return {"arrow": {"fields": fields}}
