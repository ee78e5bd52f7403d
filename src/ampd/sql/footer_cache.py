"""Tables planned from cached footers (docs/feat/data-metadata-caching.md).

Reading Parquet from an object store costs a request per file before any data moves: its
size, then its footer. For a table of a thousand files that is seconds of planning on every
query; on a local disk too, where DataFusion opens and parses every file's footer again for
each query (3.6 s for a COUNT(*) over 1,000 files). Here neither is fetched on the query
path:

- sizes come from the catalog (`files.object_size`), and
- footers from the metadata DB (`footer_cache`, written in the commit's transaction), parsed
  once and kept in memory as pyarrow fragments that carry their row groups and statistics,
  weighted by footer size under `writer.cache_size_mb`.

A table is then a pyarrow dataset of those fragments, which DataFusion scans (projection and
filter pushdown, row-group pruning by statistics). Data pages are read with ranged GETs
through `StoreFiles`, a read-only pyarrow file system over the data dir's store (a local
file is opened as one). A
file without a stored footer (committed before footers were kept) has its footer read from
the store once, when a snapshot first lists it; one evicted from the cache is read at scan.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ampd.logs import get_logger
from ampd.storage.footer import InvalidFooter, parse_footer
from ampd.storage.store import ObjectStore

if TYPE_CHECKING:
    from ampd.sql.catalog import CommittedFile

log = get_logger("server")

# A scan fetches the column chunks it needs of each row group with as few ranged GETs as it
# can: ranges less than 1 MiB apart are read as one (object_store's coalescing, which Amp's
# reader uses), with no cap on a request's size (pyarrow's default, 32 MiB, splits a row
# group into requests that each cost a round trip and, on some servers, a pass over the
# whole object). Row groups are at most `writer.max_row_group_mb`.
_FORMAT = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(
        pre_buffer=True,
        cache_options=pa.CacheOptions(hole_size_limit=1 << 20, range_size_limit=1 << 40, lazy=True),
    )
)
_EMPTY = object()  # a cached file without row groups: nothing to scan
_names = itertools.count()


class FooterCache:
    """Parsed footers of one data dir's committed files, by file id (ids never change)."""

    def __init__(self, store: ObjectStore, budget_bytes: int) -> None:
        self.store = store
        self.budget = budget_bytes
        self.files = StoreFiles(store)
        self.fs = pafs.PyFileSystem(self.files)
        self._entries: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()  # lookups come from DataFusion's planning threads too
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        return self._weight

    def missing(self, files: Sequence[CommittedFile]) -> list[int]:
        """The ids of `files` whose footers are not cached."""
        with self._lock:
            return [f.id for f in files if f.id not in self._entries]

    async def load(self, files: Sequence[CommittedFile], stored: dict[int, bytes]) -> None:
        """Cache the footers of `files` not cached yet: from `stored` (file id -> footer
        bytes, as the metadata DB keeps them), else read from the store."""
        for f in files:
            self.files.sizes[f.key] = f.size
        with self._lock:
            missing = {f.id: f for f in files if f.id not in self._entries}
        if not missing:
            return
        entries = await asyncio.to_thread(self._parse, missing, stored)
        unstored = [f for i, f in missing.items() if i not in entries]
        if unstored:
            log.info("reading %d footer(s) not in the metadata DB from the store", len(unstored))
            entries.update(await asyncio.to_thread(self._read_from_store, unstored))
        with self._lock:
            for file_id, (entry, weight) in entries.items():
                if file_id not in self._entries:
                    self._entries[file_id] = (entry, weight)
                    self._weight += weight
            self._evict()

    def dataset(self, schema: pa.Schema, files: Sequence[CommittedFile]) -> ds.Dataset:
        """The files as one dataset with `schema`; cached fragments need no request."""
        fragments = []
        with self._lock:
            for f in files:  # from a snapshot: `load` recorded their sizes
                found = self._entries.get(f.id)
                if found is None:
                    self.misses += 1
                    fragments.append(_FORMAT.make_fragment(f.key, self.fs, file_size=f.size))
                    continue
                self.hits += 1
                self._entries.move_to_end(f.id)
                if found[0] is not _EMPTY:
                    fragments.append(found[0])
        return ds.FileSystemDataset(fragments, schema, _FORMAT, self.fs)

    # -- internals ----------------------------------------------------------------------

    def _parse(
        self, files: dict[int, CommittedFile], stored: dict[int, bytes]
    ) -> dict[int, tuple[Any, int]]:
        """Fragments for the files with stored footers, built from the footers alone: their
        row groups go into one in-memory `_metadata` file, which pyarrow turns into one
        fragment per file, statistics included. Files of one schema at a time."""
        by_schema: dict[pa.Schema, list[tuple[int, pq.FileMetaData]]] = {}
        out: dict[int, tuple[Any, int]] = {}
        for file_id, footer in stored.items():
            f = files.get(file_id)
            if f is None:
                continue
            try:
                meta = parse_footer(footer)
            except InvalidFooter as exc:
                log.warning("file %d (%s): stored footer ignored: %s", file_id, f.key, exc)
                continue
            if meta.num_row_groups == 0:
                out[file_id] = (_EMPTY, len(footer))
                continue
            meta.set_file_path(f.key)
            by_schema.setdefault(meta.schema.to_arrow_schema(), []).append((file_id, meta))
        for group in by_schema.values():
            combined = group[0][1]
            for _, meta in group[1:]:
                combined.append_row_groups(meta)
            sink = pa.BufferOutputStream()
            combined.write_metadata_file(sink)
            name = f".ampd-footers-{next(_names)}"
            self.files.virtual[name] = sink.getvalue()
            try:
                dataset = ds.parquet_dataset(f"/{name}", filesystem=self.fs, format=_FORMAT)
                fragments = {frag.path.lstrip("/"): frag for frag in dataset.get_fragments()}
            finally:
                del self.files.virtual[name]
            for file_id, _ in group:
                key = files[file_id].key
                out[file_id] = (fragments[key], len(stored[file_id]))
        return out

    def _read_from_store(self, files: list[CommittedFile]) -> dict[int, tuple[Any, int]]:
        out: dict[int, tuple[Any, int]] = {}
        for f in files:
            fragment = _FORMAT.make_fragment(f.key, self.fs, file_size=f.size)
            try:
                fragment.ensure_complete_metadata()
            except (OSError, pa.ArrowException) as exc:
                log.warning("file %d (%s): footer unreadable: %s", f.id, f.key, exc)
                continue
            meta = fragment.metadata
            out[f.id] = (fragment if meta.num_row_groups else _EMPTY, meta.serialized_size)
        return out

    def _evict(self) -> None:
        while self._weight > self.budget and self._entries:
            _, (_, weight) = self._entries.popitem(last=False)
            self._weight -= weight


class StoreFiles(pafs.FileSystemHandler):
    """A read-only pyarrow file system over a store's objects, for sizes it is told (no HEAD
    request), plus in-memory `virtual` files (the `_metadata` of a footer load)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.sizes: dict[str, int] = {}
        self.virtual: dict[str, pa.Buffer] = {}

    def get_type_name(self) -> str:
        return "ampd-store"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [pafs.FileInfo(p, pafs.FileType.File, size=self._size(p)) for p in paths]

    def open_input_file(self, path: str) -> pa.NativeFile:
        key = path.lstrip("/")
        if key in self.virtual:
            return pa.BufferReader(self.virtual[key])
        return self.store.open_sized(key, self._size(path))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def _size(self, path: str) -> int:
        key = path.lstrip("/")
        if key in self.virtual:
            return self.virtual[key].size
        size = self.sizes.get(key)
        if size is None:
            raise FileNotFoundError(f"{self.store.url(key)}: not a committed file")
        return size

    def _read_only(self, *args: Any) -> None:
        raise OSError("the query server's view of the data store is read-only")

    get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _read_only
    delete_root_dir_contents = delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = object.__hash__
