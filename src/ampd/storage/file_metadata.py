"""The key-value metadata in each Parquet file's footer, in Amp's layout.

    nozzle_metadata  {"table", "filename", "created_at": {"secs", "nanos"},
                      "ranges": [{"numbers": {"start", "end"}, "network", "hash", "prev_hash",
                                  "timestamp"}]}
    parent_file_ids  "[]"   (JSON list of the files a compacted file replaces)
    generation       "0"    (how many times the file was compacted)

`hash` is the last block's hash and `prev_hash` the first block's parent hash (0x hex);
`timestamp` is the last block's timestamp in seconds. With these a file can be registered
again from storage alone.
"""

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

NOZZLE_METADATA_KEY = "nozzle_metadata"
PARENT_FILE_IDS_KEY = "parent_file_ids"
GENERATION_KEY = "generation"


class InvalidFileMetadata(ValueError):
    """A Parquet file without (readable) Amp metadata in its footer."""


@dataclass(frozen=True)
class BlockRange:
    """An inclusive range of blocks, with the hashes that chain it to its neighbours."""

    start: int
    end: int
    network: str
    hash: str
    prev_hash: str
    timestamp: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "numbers": {"start": self.start, "end": self.end},
            "network": self.network,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }
        if self.timestamp is not None:  # Amp leaves it out when unknown
            out["timestamp"] = self.timestamp
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "BlockRange":
        return cls(
            start=int(obj["numbers"]["start"]),
            end=int(obj["numbers"]["end"]),
            network=str(obj["network"]),
            hash=str(obj["hash"]),
            prev_hash=str(obj["prev_hash"]),
            timestamp=None if obj.get("timestamp") is None else int(obj["timestamp"]),
        )


@dataclass(frozen=True)
class FileMetadata:
    """Everything a file's footer says about where it belongs."""

    table: str
    filename: str
    ranges: tuple[BlockRange, ...]
    created_at_ns: int = field(default_factory=time.time_ns)
    parent_file_ids: tuple[int, ...] = ()
    generation: int = 0

    @property
    def range(self) -> BlockRange:
        """The file's block range (raw files have exactly one)."""
        return self.ranges[0]

    def nozzle_metadata(self) -> dict[str, Any]:
        secs, nanos = divmod(self.created_at_ns, 1_000_000_000)
        return {
            "table": self.table,
            "filename": self.filename,
            "created_at": {"secs": secs, "nanos": nanos},
            "ranges": [r.to_json() for r in self.ranges],
        }

    def key_value_metadata(self) -> dict[str, str]:
        return {
            NOZZLE_METADATA_KEY: json.dumps(self.nozzle_metadata(), separators=(",", ":")),
            PARENT_FILE_IDS_KEY: json.dumps(list(self.parent_file_ids)),
            GENERATION_KEY: str(self.generation),
        }

    @classmethod
    def from_key_value_metadata(
        cls, kv: dict[bytes, bytes] | dict[str, str] | None, where: str = "file"
    ) -> "FileMetadata":
        """Parse a footer's key-value metadata. Raises InvalidFileMetadata naming `where`."""
        decoded = {_text(k): _text(v) for k, v in (kv or {}).items()}
        raw = decoded.get(NOZZLE_METADATA_KEY)
        if raw is None:
            raise InvalidFileMetadata(f"{where}: no {NOZZLE_METADATA_KEY!r} in the footer")
        try:
            meta = json.loads(raw)
            created = meta["created_at"]
            return cls(
                table=str(meta["table"]),
                filename=str(meta["filename"]),
                ranges=tuple(BlockRange.from_json(r) for r in meta["ranges"]),
                created_at_ns=int(created["secs"]) * 1_000_000_000 + int(created["nanos"]),
                parent_file_ids=tuple(
                    int(i) for i in json.loads(decoded.get(PARENT_FILE_IDS_KEY, "[]"))
                ),
                generation=int(decoded.get(GENERATION_KEY, "0")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidFileMetadata(
                f"{where}: unreadable {NOZZLE_METADATA_KEY}: {exc!r}"
            ) from None


def read_file_metadata(source: str | pa.NativeFile) -> dict[str, Any]:
    """Read a Parquet file's footer (a local path or an open file): `{"nozzle_metadata",
    "parent_file_ids", "generation", "num_rows"}`, JSON values decoded.

    Raises InvalidFileMetadata for a file that is not Parquet or has no Amp metadata.
    """
    meta, num_rows = read_footer(source)
    return {
        "nozzle_metadata": meta.nozzle_metadata(),
        "parent_file_ids": list(meta.parent_file_ids),
        "generation": meta.generation,
        "num_rows": num_rows,
    }


def read_footer(source: str | pa.NativeFile) -> tuple[FileMetadata, int]:
    """The FileMetadata and row count of a Parquet file. Raises InvalidFileMetadata."""
    where = str(source) if isinstance(source, str) else "file"
    try:
        footer = pq.read_metadata(source)
    except (OSError, pa.ArrowException) as exc:
        raise InvalidFileMetadata(f"{where}: not a readable Parquet file: {exc}") from None
    return FileMetadata.from_key_value_metadata(footer.metadata, where), footer.num_rows


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
