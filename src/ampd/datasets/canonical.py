"""The canonical text of a manifest, whose SHA-256 is its manifest hash, as Amp computes it.

Amp parses a manifest into its typed form and serializes that back (serde_json, compact):
object keys come in the order its structs declare them, maps (tables, dependencies,
functions) in key order, defaults filled in, unknown fields dropped, and every Arrow type in
arrow-rs's own form. The same manifest registered on Amp and on ampd thus gets the same
hash, however it was spaced, ordered or abbreviated. The forms, by kind:

    raw (evm-rpc, firehose, solana):
        {"kind","network","start_block","finalized_blocks_only",
         "tables":{name:{"schema":{"arrow":{"fields":[{"name","type","nullable"}]}},"network"}}}
    derived ("manifest"):
        {"kind","dependencies":{alias:"ns/name@revision"},
         "tables":{name:{"input":{"sql"},"schema":{"arrow":{"fields":[...]}}}},
         "functions":{name:{"inputTypes","outputType","source":{"source","filename"}}}}

The manifest must already be checked (`parse_manifest`, `parse_derived`): this module only
puts the checked values in order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ampd.datasets import arrow_types

__all__ = ["RAW_KINDS", "canonical_hash", "canonical_text"]

RAW_KINDS = ("evm-rpc", "firehose", "solana")
DERIVED_KIND = "manifest"


def canonical_text(manifest: Mapping[str, Any]) -> str:
    """The manifest in Amp's canonical serialization (compact JSON, UTF-8 kept as is)."""
    kind = manifest.get("kind")
    if kind == DERIVED_KIND:
        ordered = _derived(manifest)
    elif kind in RAW_KINDS:
        ordered = _raw(manifest)
    else:
        raise ValueError(f"no canonical form for manifest kind {kind!r}")
    # serde_json escapes what json.dumps escapes with ensure_ascii off: quote, backslash and
    # control characters (\b \f \n \r \t, the rest as lowercase \u00XX).
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def canonical_hash(manifest: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the canonical text."""
    return hashlib.sha256(canonical_text(manifest).encode("utf-8")).hexdigest()


def _raw(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": m["kind"],
        "network": m["network"],
        "start_block": m.get("start_block", 0),
        "finalized_blocks_only": m.get("finalized_blocks_only", False),
        "tables": {
            name: {"schema": _schema(table["schema"]), "network": table["network"]}
            for name, table in sorted((m.get("tables") or {}).items())
        },
    }


def _derived(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": DERIVED_KIND,
        "dependencies": {
            alias: _dependency(ref) for alias, ref in sorted((m.get("dependencies") or {}).items())
        },
        "tables": {
            name: {"input": {"sql": table["input"]["sql"]}, "schema": _schema(table["schema"])}
            for name, table in sorted((m.get("tables") or {}).items())
        },
        "functions": {
            name: {
                "inputTypes": [_type(t) for t in fn["inputTypes"]],
                "outputType": _type(fn["outputType"]),
                "source": {"source": fn["source"]["source"], "filename": fn["source"]["filename"]},
            }
            for name, fn in sorted((m.get("functions") or {}).items())
        },
    }


def _schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    fields = [
        {"name": f["name"], "type": _type(f["type"]), "nullable": f["nullable"]}
        for f in schema["arrow"]["fields"]
    ]
    return {"arrow": {"fields": fields}}


def _type(value: Any) -> Any:
    return arrow_types.to_json(arrow_types.from_json(value))


def _dependency(reference: str) -> str:
    """`ns/name@revision` as Amp prints it: a hash in lowercase, a version as semver does."""
    fqn, _, revision = reference.partition("@")
    if len(revision) == 64:
        try:
            int(revision, 16)
        except ValueError:
            pass
        else:
            return f"{fqn}@{revision.lower()}"
    return f"{fqn}@{revision}"
