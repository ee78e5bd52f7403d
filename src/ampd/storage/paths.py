"""Where a table's Parquet files live in the data store.

    <namespace>/<dataset>/<table>/<revision uuid>/<first block, 9+ digits>-<16 hex>.parquet

The first block is zero-padded so that names sort by block; the random suffix keeps two
files that start at the same block (a reorg, a retried segment) apart.
"""

import re
import secrets
import uuid
from dataclasses import dataclass

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_FILE_NAME = re.compile(r"^(\d{9,})-([0-9a-f]{16})\.parquet$")


@dataclass(frozen=True)
class TableLocation:
    """One revision of one table of one dataset: the folder its files go to."""

    namespace: str
    dataset: str
    table: str
    revision: str

    def __post_init__(self) -> None:
        for name in ("namespace", "dataset", "table"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SEGMENT.match(value) or value in (".", ".."):
                raise ValueError(f"invalid {name} {value!r} for a storage path")
        try:
            revision = str(uuid.UUID(str(self.revision)))
        except ValueError:
            raise ValueError(f"invalid revision {self.revision!r}: expected a UUID") from None
        object.__setattr__(self, "revision", revision)

    @property
    def prefix(self) -> str:
        """The key prefix of this revision's files, ending in `/`."""
        return f"{self.namespace}/{self.dataset}/{self.table}/{self.revision}/"

    def key(self, file_name: str) -> str:
        return self.prefix + file_name


def new_revision() -> str:
    """A fresh revision id (a random UUID)."""
    return str(uuid.uuid4())


def file_name(start_block: int, suffix: int | None = None) -> str:
    """`000001234-0123456789abcdef.parquet`; a random 64-bit suffix unless one is given."""
    if start_block < 0:
        raise ValueError(f"negative start block {start_block}")
    if suffix is None:
        suffix = secrets.randbits(64)
    return f"{start_block:09d}-{suffix:016x}.parquet"


def parse_file_name(name: str) -> int:
    """The first block of a file from its name. Raises ValueError for a name not ours."""
    match = _FILE_NAME.match(name)
    if match is None:
        raise ValueError(f"not a table file name: {name!r}")
    return int(match.group(1))
