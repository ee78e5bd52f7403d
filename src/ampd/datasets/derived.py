"""Derived dataset manifests (kind `"manifest"`): parsed, checked and put in build order.

A derived dataset names the datasets it reads by alias and defines each of its tables by
SQL over their tables and over its own (`self.<table>`):

    {"kind": "manifest",
     "dependencies": {"eth": "edgeandnode/mainnet@1.0.0"},
     "tables": {"transfers": {"input": {"sql": "SELECT ... FROM eth.logs WHERE ..."},
                              "schema": {"arrow": {"fields": [...]}}}},
     "functions": {"decode": {"inputTypes": ["Binary"], "outputType": "Utf8",
                              "source": {"source": "...", "filename": "decode.js"}}}}

The shape follows Amp's `docs/schemas/manifest/derived.spec.json`. Field errors are
ManifestValidationError (the dotted path, the value, what was expected); errors between
tables carry Amp's error codes (DerivedManifestError.code): SELF_REFERENCING_TABLE,
CYCLIC_DEPENDENCY, TABLE_NOT_FOUND_IN_DATASET. `table_order` lists the tables with every
table after the sibling tables it reads, as the materialization must build them.

Planning each table's SQL against its dependencies (and checking the declared schema
against the plan's) needs the catalog; that is the query engine's part, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ampd.datasets import arrow_types
from ampd.datasets.canonical import canonical_hash
from ampd.datasets.manifest import ManifestValidationError
from ampd.sql.references import table_references

__all__ = [
    "DERIVED_KIND",
    "DerivedManifest",
    "DerivedManifestError",
    "parse_derived",
    "sibling_reads",
    "table_order",
]

DERIVED_KIND = "manifest"
_ALIAS = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_$]*$")  # tables and functions
_DEPENDENCY = re.compile(r"^[a-z0-9_]+/[a-z_][a-z0-9_]*@(.+)$")
_SYMBOLIC = ("latest", "dev")
_MAX_NAME_BYTES = 255


class DerivedManifestError(ValueError):
    """A derived manifest whose tables do not fit together; `code` is Amp's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DerivedTable:
    name: str
    sql: str
    schema: pa.Schema  # as declared
    reads: tuple[str, ...]  # the sibling tables its SQL names as self.<table>


@dataclass(frozen=True)
class DerivedFunction:
    name: str
    input_types: tuple[pa.DataType, ...]
    output_type: pa.DataType
    source: str
    filename: str


@dataclass(frozen=True)
class DerivedManifest:
    dependencies: dict[str, str]  # alias -> namespace/name@version-or-hash
    tables: dict[str, DerivedTable]
    functions: dict[str, DerivedFunction]
    table_order: list[str]  # every table after the sibling tables it reads
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    kind = DERIVED_KIND
    start_block = 0
    finalized_blocks_only = False

    @property
    def hash(self) -> str:
        return canonical_hash(self.raw)

    @property
    def schemas(self) -> dict[str, pa.Schema]:
        """The tables' declared schemas (checked against their SQL at registration)."""
        return {name: table.schema for name, table in self.tables.items()}


def parse_derived(raw: Mapping[str, Any]) -> DerivedManifest:
    """Check a derived manifest (a decoded JSON object). Raises ManifestValidationError or
    DerivedManifestError; returns the tables in build order."""
    raw = dict(raw)
    if raw.get("kind") != DERIVED_KIND:
        raise ManifestValidationError("kind", raw.get("kind"), f"expected {DERIVED_KIND!r}")
    dependencies = {
        alias: _dependency(alias, value)
        for alias, value in _object(raw, "dependencies", _ALIAS, "a dependency alias").items()
    }
    functions = {
        name: _function(name, value)
        for name, value in _object(raw, "functions", _NAME, "a function name").items()
    }
    tables_json = _object(raw, "tables", _NAME, "a table name")
    if not tables_json and not functions:
        raise ManifestValidationError("tables", raw.get("tables"), "expected at least one table")
    tables = {name: _table(name, value, set(tables_json)) for name, value in tables_json.items()}
    order = _build_order({name: table.reads for name, table in tables.items()})
    return DerivedManifest(dependencies, tables, functions, order, raw)


# -- fields ---------------------------------------------------------------------------------


def _object(raw: Mapping[str, Any], key: str, names: re.Pattern, what: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ManifestValidationError(key, value, "expected an object")
    for name in value:
        if not names.match(name) or len(name.encode()) > _MAX_NAME_BYTES:
            raise ManifestValidationError(
                f"{key}.{name}", name, f"expected {what} matching {names.pattern}"
            )
    return value


def _dependency(alias: str, value: Any) -> str:
    path = f"dependencies.{alias}"
    match = _DEPENDENCY.match(value) if isinstance(value, str) else None
    if match is None:
        raise ManifestValidationError(
            path, value, "expected namespace/name@version or namespace/name@hash"
        )
    if match.group(1) in _SYMBOLIC:
        raise ManifestValidationError(
            path, value, "expected an explicit version or hash, not a symbolic reference"
        )
    return value


def _required(obj: Any, path: str, key: str, kind: type, expected: str) -> Any:
    if not isinstance(obj, dict):
        raise ManifestValidationError(path, obj, "expected an object")
    if key not in obj:
        raise ManifestValidationError(
            f"{path}.{key}", None, "required field is missing", missing=True
        )
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ManifestValidationError(f"{path}.{key}", value, expected)
    return value


def _arrow_type(path: str, value: Any, name: str) -> pa.DataType:
    try:
        return arrow_types.from_json(value, name)
    except arrow_types.UnknownArrowType as exc:
        raise ManifestValidationError(path, value, f"{exc.reason} at {exc.path}") from None


def _schema(table: str, value: Any) -> pa.Schema:
    path = f"tables.{table}.schema"
    arrow = _required(value, path, "arrow", dict, "expected an object")
    fields = _required(arrow, f"{path}.arrow", "fields", list, "expected a list of fields")
    if not fields:
        raise ManifestValidationError(f"{path}.arrow.fields", fields, "expected at least one field")
    out = []
    for i, f in enumerate(fields):
        at = f"{path}.arrow.fields[{i}]"
        name = _required(f, at, "name", str, "expected a string")
        nullable = _required(f, at, "nullable", bool, "expected true or false")
        if "type" not in f:
            raise ManifestValidationError(
                f"{at}.type", None, "required field is missing", missing=True
            )
        out.append(pa.field(name, _arrow_type(f"{at}.type", f["type"], name), nullable=nullable))
    try:
        return pa.schema(out)
    except (pa.ArrowException, ValueError) as exc:
        raise ManifestValidationError(f"{path}.arrow.fields", None, str(exc)) from None


def _table(name: str, value: Any, siblings: set[str]) -> DerivedTable:
    path = f"tables.{name}"
    view = _required(value, path, "input", dict, "expected an object")
    sql = _required(view, f"{path}.input", "sql", str, "expected a string")
    if not sql.strip():
        raise ManifestValidationError(f"{path}.input.sql", sql, "expected SQL, not an empty string")
    schema = _schema(name, _required(value, path, "schema", dict, "expected an object"))
    return DerivedTable(name, sql, schema, sibling_reads(name, sql, siblings))


def sibling_reads(name: str, sql: str, siblings: Container[str]) -> tuple[str, ...]:
    """The sibling tables table `name`'s SQL reads (`self.<table>`); raises
    DerivedManifestError for itself or a table `siblings` lacks."""
    reads = sorted({t for s, t in table_references(sql) if s == "self"})
    if name in reads:
        raise DerivedManifestError(
            "SELF_REFERENCING_TABLE", f"table {name!r} reads itself (self.{name})"
        )
    unknown = [t for t in reads if t not in siblings]
    if unknown:
        raise DerivedManifestError(
            "TABLE_NOT_FOUND_IN_DATASET",
            f"table {name!r} reads self.{unknown[0]}, which this dataset does not define",
        )
    return tuple(reads)


def table_order(sql_by_table: Mapping[str, str]) -> list[str]:
    """The tables in build order, each after the sibling tables its SQL reads; raises
    DerivedManifestError (a table that reads itself, a cycle, an unknown sibling)."""
    return _build_order(
        {name: sibling_reads(name, sql, sql_by_table) for name, sql in sql_by_table.items()}
    )


def _function(name: str, value: Any) -> DerivedFunction:
    path = f"functions.{name}"
    inputs = _required(value, path, "inputTypes", list, "expected a list of Arrow types")
    output = _required(value, path, "outputType", (str, dict), "expected an Arrow type")
    source = _required(value, path, "source", dict, "expected an object")
    return DerivedFunction(
        name,
        tuple(_arrow_type(f"{path}.inputTypes[{i}]", t, name) for i, t in enumerate(inputs)),
        _arrow_type(f"{path}.outputType", output, name),
        _required(source, f"{path}.source", "source", str, "expected a string"),
        _required(source, f"{path}.source", "filename", str, "expected a string"),
    )


# -- order ----------------------------------------------------------------------------------


def _build_order(tables: Mapping[str, Sequence[str]]) -> list[str]:
    """Every table after the tables it reads; tables unrelated to each other by name."""
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise DerivedManifestError(
                "CYCLIC_DEPENDENCY",
                f"tables read each other in a cycle: {' -> '.join(cycle)}",
            )
        path.append(name)
        for read in tables[name]:
            visit(read)
        path.pop()
        done.add(name)
        order.append(name)

    for name in sorted(tables):
        visit(name)
    return order
