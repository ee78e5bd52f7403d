"""An extraction target for the engine's tests: a new revision of every table, in a store."""

from __future__ import annotations

from typing import Any

from ampd.extract.engine import ExtractionTarget
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.parquet_writer import WriterSettings
from ampd.storage.paths import new_revision
from ampd.storage.store import ObjectStore


def target_for(store: ObjectStore, **kw: Any) -> ExtractionTarget:
    """Default writer settings, the `anvil` network, `_/chain/<table>/<new revision>`."""
    return ExtractionTarget(
        network="anvil",
        schemas=TABLES,
        store=store,
        writer=WriterSettings(),
        table_prefixes={t: f"_/chain/{t}/{new_revision()}" for t in TABLES},
        **kw,
    )
