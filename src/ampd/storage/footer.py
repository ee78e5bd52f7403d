"""A Parquet file's footer as bytes: captured by the writer, kept in the metadata DB, parsed
by the query server without reading the object again (docs/feat/data-metadata-caching.md).

The bytes are the file's last `4 + len + 4` bytes: the Thrift-encoded FileMetaData, its
length (little-endian u32) and the `PAR1` magic, exactly as they are in the file.
"""

from __future__ import annotations

import os
import struct

import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"


class InvalidFooter(ValueError):
    """Bytes that are not the end of a Parquet file."""


def footer_bytes(source: str | os.PathLike | pa.NativeFile) -> bytes:
    """The footer of the Parquet file at `source` (a local path or an open file)."""
    if isinstance(source, pa.NativeFile):
        return _read_tail(source)
    with pa.OSFile(str(source), "rb") as f:
        return _read_tail(f)


def parse_footer(footer: bytes) -> pq.FileMetaData:
    """The parsed FileMetaData of footer bytes. Raises InvalidFooter."""
    if len(footer) < 8 or footer[-4:] != MAGIC:
        raise InvalidFooter("not a Parquet footer: it does not end with PAR1")
    (length,) = struct.unpack("<I", footer[-8:-4])
    if length + 8 != len(footer):
        raise InvalidFooter(f"footer length {length} does not match {len(footer) - 8} bytes")
    try:
        # A file with no data pages: the leading magic, then the footer.
        return pq.read_metadata(pa.BufferReader(MAGIC + footer))
    except (OSError, pa.ArrowException) as exc:
        raise InvalidFooter(f"unreadable Parquet footer: {exc}") from None


def _read_tail(f: pa.NativeFile) -> bytes:
    size = f.size()
    if size < 12:
        raise InvalidFooter(f"a {size}-byte file is too short to be Parquet")
    f.seek(size - 8)
    tail = f.read(8)
    if tail[4:] != MAGIC:
        raise InvalidFooter("not a Parquet file: it does not end with PAR1")
    (length,) = struct.unpack("<I", tail[:4])
    if length + 12 > size:
        raise InvalidFooter(f"footer length {length} exceeds the {size}-byte file")
    f.seek(size - 8 - length)
    return f.read(length) + tail
