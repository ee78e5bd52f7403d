"""Dataset manifests: parse and check the JSON once at the edge, hash it, generate it.

A raw manifest (kind evm-rpc or firehose; both have the same fields):

    {"kind": "evm-rpc", "network": "anvil", "start_block": 0, "finalized_blocks_only": false,
     "tables": {"blocks": {"schema": {"arrow": {"fields": [...]}}, "network": "anvil"}, ...}}

`tables` may be absent or carry older schemas; the kind's own schemas
(`providers.kinds.source_kind(kind).tables`) are the ones data is written with.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as _PydanticError

from ampd.datasets import arrow_types
from ampd.datasets.canonical import canonical_hash, canonical_text
from ampd.providers.config import EVM_RPC_KIND
from ampd.providers.kinds import RAW_KINDS, source_kind

KINDS = RAW_KINDS
_MAX_BLOCK = 2**64 - 1


class InvalidManifest(ValueError):
    """Not a manifest at all: bad JSON, not an object, or a missing or unknown `kind`."""


class ManifestValidationError(ValueError):
    """A manifest of a known kind with a bad field. `field` is a dotted path to it."""

    def __init__(self, field: str, value: Any, expected: str, *, missing: bool = False) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        got = "" if missing else f" (got {_short(value)})"
        super().__init__(f"manifest field {field!r}: {expected}{got}")


@dataclass(frozen=True)
class ManifestTable:
    """A table as the manifest declares it (possibly an older schema than the extractor's)."""

    name: str
    network: str
    schema: pa.Schema


@dataclass(frozen=True)
class Manifest:
    """A checked manifest. `raw` is the JSON object as given; `hash` is its manifest hash
    (Amp's: of the canonical form, so spacing, key order and defaults do not change it)."""

    kind: str
    network: str
    start_block: int = 0
    finalized_blocks_only: bool = False
    tables: dict[str, ManifestTable] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def hash(self) -> str:
        return manifest_hash(self.raw)

    @property
    def schemas(self) -> dict[str, pa.Schema]:
        """The schemas the extractor writes for this kind (authoritative, not the declared ones)."""
        return dict(source_kind(self.kind).tables)


# -- the edge: pydantic models of the JSON --------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _FieldModel(_Model):
    name: StrictStr
    type: Any
    nullable: StrictBool


class _ArrowSchemaModel(_Model):
    fields: list[_FieldModel]


class _TableSchemaModel(_Model):
    arrow: _ArrowSchemaModel


class _TableModel(_Model):
    table_schema: _TableSchemaModel = Field(alias="schema")
    network: StrictStr = Field(min_length=1)


class _ManifestModel(_Model):
    kind: StrictStr
    network: StrictStr = Field(min_length=1)
    start_block: StrictInt = Field(0, ge=0, le=_MAX_BLOCK)
    finalized_blocks_only: StrictBool = False
    tables: dict[str, _TableModel] | None = None


# -- public API -----------------------------------------------------------------------------


def parse_manifest(source: str | bytes | Mapping[str, Any]) -> Manifest:
    """Parse manifest JSON (text or an already decoded object) into a checked Manifest.

    Raises InvalidManifest for bad JSON, a non-object or a missing/unknown kind, and
    ManifestValidationError (naming the field, the value and what was expected) otherwise.
    """
    raw = _decode(source)
    kind = raw.get("kind")
    if kind is None:
        raise InvalidManifest(f"manifest has no 'kind'; expected one of {list(KINDS)}")
    if kind not in KINDS:
        raise InvalidManifest(
            f"unknown manifest kind {_short(kind)}; expected one of {list(KINDS)}"
        )
    try:
        model = _ManifestModel.model_validate(raw)
    except _PydanticError as exc:
        raise _validation_error(exc) from None
    tables = {
        name: ManifestTable(name, table.network, _schema_from_model(name, table))
        for name, table in (model.tables or {}).items()
    }
    return Manifest(
        kind=model.kind,
        network=model.network,
        start_block=model.start_block,
        finalized_blocks_only=model.finalized_blocks_only,
        tables=tables,
        raw=raw,
    )


def manifest_hash(obj: Mapping[str, Any] | str | bytes) -> str:
    """Amp's manifest hash of a checked manifest object (or of its JSON text): the SHA-256
    of its canonical serialization (datasets/canonical.py)."""
    if isinstance(obj, str | bytes):
        obj = _decode(obj)
    return canonical_hash(obj)


def canonical_manifest(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as Amp stores it: defaults filled in, unknown fields dropped."""
    return json.loads(canonical_text(obj))


def generate_manifest(
    kind: str = EVM_RPC_KIND,
    network: str | None = None,
    start_block: int = 0,
    finalized_blocks_only: bool = False,
) -> dict[str, Any]:
    """A complete manifest for `kind` with the extractor's table schemas in arrow-rs JSON form.

    Raises InvalidManifest for an unknown kind and ManifestValidationError for a bad network
    or start block.
    """
    if kind not in KINDS:
        raise InvalidManifest(
            f"unknown manifest kind {_short(kind)}; expected one of {list(KINDS)}"
        )
    if not isinstance(network, str) or not network:
        raise ManifestValidationError("network", network, "expected a non-empty string")
    if (
        isinstance(start_block, bool)
        or not isinstance(start_block, int)
        or not 0 <= start_block <= _MAX_BLOCK
    ):
        raise ManifestValidationError("start_block", start_block, "expected an integer >= 0")
    tables = source_kind(kind).tables
    return {
        "kind": kind,
        "network": network,
        "start_block": start_block,
        "finalized_blocks_only": bool(finalized_blocks_only),
        # Amp keeps tables in a sorted map; the same order here keeps the output comparable.
        "tables": {
            name: {
                "schema": {"arrow": {"fields": schema_to_json(tables[name])}},
                "network": network,
            }
            for name in sorted(tables)
        },
    }


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    """A table's columns as manifest fields: `{"name", "type", "nullable"}` each."""
    return [
        {"name": f.name, "type": arrow_types.to_json(f.type), "nullable": f.nullable}
        for f in schema
    ]


# -- helpers --------------------------------------------------------------------------------


def _decode(source: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    try:
        obj = json.loads(source)
    except (ValueError, TypeError) as exc:
        raise InvalidManifest(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidManifest(f"manifest must be a JSON object, got {type(obj).__name__}")
    return obj


def _schema_from_model(table: str, model: _TableModel) -> pa.Schema:
    fields = []
    for i, f in enumerate(model.table_schema.arrow.fields):
        path = f"tables.{table}.schema.arrow.fields[{i}].type"
        try:
            type_ = arrow_types.from_json(f.type, f.name)
        except arrow_types.UnknownArrowType as exc:
            raise ManifestValidationError(
                path,
                f.type,
                f"table {table!r}, field {f.name!r}: {exc.reason} at {exc.path}: {_short(exc.value)}",
            ) from None
        fields.append(pa.field(f.name, type_, nullable=f.nullable))
    try:
        return pa.schema(fields)
    except (pa.ArrowException, ValueError) as exc:
        raise ManifestValidationError(
            f"tables.{table}.schema.arrow.fields", None, str(exc)
        ) from None


_EXPECTED = {
    "missing": "required field is missing",
    "string_type": "expected a string",
    "string_too_short": "expected a non-empty string",
    "int_type": "expected an integer",
    "greater_than_equal": "expected an integer >= 0",
    "less_than_equal": "expected an integer < 2^64",
    "bool_type": "expected true or false",
    "dict_type": "expected an object",
    "list_type": "expected a list",
    "model_type": "expected an object",
}


def _validation_error(exc: _PydanticError) -> ManifestValidationError:
    err = exc.errors()[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    expected = _EXPECTED.get(err["type"], err["msg"])
    missing = err["type"] == "missing"
    value = None if missing else err.get("input")
    return ManifestValidationError(path, value, expected, missing=missing)


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, pa.DataType) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
