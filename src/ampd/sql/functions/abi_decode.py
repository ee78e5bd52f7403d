"""ABI decoding of Binary columns into Arrow arrays.

A row's static parameters sit at fixed word positions, so they are sliced out of the
column for every row at once and decoded by `words.py`; only dynamic values (bytes,
string, arrays, tuples holding them) are read row by row, by `_Reader`, which follows the
rules of the decoder Amp uses (alloy): an offset or length word must have its top 24
bytes zero and point inside the data, arrays must have room for their items, nesting
stops at depth 16, trailing bytes are ignored, and a string that is not UTF-8 is decoded
with replacement characters. A row that does not decode is NULL; a value that decodes but
does not fit its Arrow type is an error (Amp's behaviour).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from ampd.sql.functions.abi_types import DEC128, DEC256, SolType
from ampd.sql.functions.errors import AbiError
from ampd.sql.functions.words import decode_static

_ZERO24 = bytes(24)
_ZERO32 = bytes(32)
_DEPTH_LIMIT = 16
_GATHER_BYTES = 1 << 22  # bytes gathered per step when rows have different lengths


class _Invalid(Exception):
    """The data does not decode as the type."""


class _Reader:
    """A view of `buf[start:end]` with a read position, like alloy's `Decoder`."""

    __slots__ = ("buf", "start", "end", "pos", "depth")

    def __init__(self, buf: bytes, start: int, end: int, depth: int = 0) -> None:
        self.buf, self.start, self.end, self.pos, self.depth = buf, start, end, 0, depth

    def remaining_words(self) -> int:
        left = self.end - self.start - self.pos
        return left // 32 if left > 0 else 0

    def word(self) -> bytes:
        at = self.start + self.pos
        if at + 32 > self.end:
            raise _Invalid
        self.pos += 32
        return self.buf[at : at + 32]

    def offset(self) -> int:
        w = self.word()
        if w[:24] != _ZERO24:
            raise _Invalid
        return int.from_bytes(w[24:], "big")

    def child(self, offset: int) -> _Reader:
        if self.depth >= _DEPTH_LIMIT or offset > self.end - self.start:
            raise _Invalid
        return _Reader(self.buf, self.start + offset, self.end, self.depth + 1)

    def take(self, length: int) -> bytes:
        at = self.start + self.pos
        if at + length > self.end:
            raise _Invalid
        return self.buf[at : at + length]


def _read(t: SolType, r: _Reader):
    """The raw value of `t` at the reader's position: integers as the unsigned word."""
    kind = t.kind
    if kind in ("uint", "int"):
        return int.from_bytes(r.word(), "big")
    if kind == "address":
        return r.word()[12:]
    if kind == "bool":
        return r.word() != _ZERO32
    if kind == "fbytes":
        return r.word()[: t.size]
    if kind in ("bytes", "string"):
        child = r.child(r.offset())
        length = child.offset()
        raw = child.take(length)
        return raw.decode("utf-8", "replace") if kind == "string" else raw
    if kind == "array":
        child = r.child(r.offset())
        size = child.offset()
        if size == 0:
            return []
        items = child.child(child.pos)
        if items.remaining_words() < t.inner.min_words * size:
            raise _Invalid
        return [_read(t.inner, items) for _ in range(size)]
    if kind in ("farray", "tuple"):
        parts = (t.inner,) * t.size if kind == "farray" else t.items
        if t.dynamic:
            child = r.child(r.offset())
            return [_read(p, child) for p in parts]
        child = r.child(r.pos)
        values = [_read(p, child) for p in parts]
        r.pos = child.pos + (child.start - r.start)
        return values
    raise AbiError(f"cannot convert solidity type {t} to arrow data type")


def int_value(raw: int, t: SolType):
    """A decoded integer word as a value of `t`'s Arrow type, or Amp's error."""
    bits = t.size
    arrow = t.arrow
    what = f"error converting {t.kind}{bits}"
    if t.kind == "int" or arrow == DEC256:
        value = raw - (1 << 256) if raw >> 255 else raw
    else:
        value = raw
    if arrow == DEC256:
        if abs(value) > 10**76 - 1:
            raise AbiError(f"{what}: {_precision('Decimal256', 76, value)}")
        return value
    if pa.types.is_string(arrow):
        return str(value)
    if arrow == DEC128:
        if not -(1 << 127) <= value < (1 << 127):
            reason = (
                "output of range integer conversion attempted"
                if t.kind == "int"
                else "Uint<256> value is too large for i128"
            )
            raise AbiError(f"{what}: {reason}")
        if abs(value) > 10**38 - 1:
            raise AbiError(f"{what}: {_precision('Decimal128', 38, value)}")
        return value
    width = arrow.bit_width
    if t.kind == "int":
        if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
            raise AbiError(f"{what}: output of range integer conversion attempted")
    elif value >> width:
        raise AbiError(f"{what}: Uint<256> value is too large for u{width}")
    return value


def _precision(kind: str, digits: int, value: int) -> str:
    bound = 10**digits - 1
    if value > 0:
        return (
            f"Invalid argument error: {value} is too large to store in a {kind} of "
            f"precision {digits}. Max is {bound}"
        )
    return (
        f"Invalid argument error: {value} is too small to store in a {kind} of "
        f"precision {digits}. Min is -{bound}"
    )


def arrow_value(raw, t: SolType):
    """A raw decoded value as the Python value of `t`'s Arrow type."""
    kind = t.kind
    if kind in ("uint", "int"):
        return int_value(raw, t)
    if kind in ("array", "farray"):
        return [arrow_value(v, t.inner) for v in raw]
    if kind == "tuple":
        return tuple(arrow_value(v, p) for v, p in zip(raw, t.items, strict=True))
    return raw


class Rows:
    """A Binary column's rows as start/end positions in its data buffer, so rows are
    sliced without a copy each."""

    def __init__(self, data: pa.Array) -> None:
        if data.type != pa.binary():
            data = data.cast(pa.binary())
        n = len(data)
        self.n = n
        buffers = data.buffers()
        offsets = np.frombuffer(buffers[1], dtype=np.int32, count=n + 1, offset=data.offset * 4)
        offsets = offsets.astype(np.int64)
        self.starts, self.ends = offsets[:-1], offsets[1:]
        if data.null_count:
            self.present = ~data.is_null().to_numpy(zero_copy_only=False)
        else:
            self.present = np.ones(n, bool)
        values = buffers[2]
        if values is None:
            self.values = np.zeros(0, np.uint8)
        else:
            self.values = np.frombuffer(values, dtype=np.uint8)
        self._raw: tuple[bytes, int] | None = None

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def skip(self, count: int, keep: np.ndarray) -> Rows:
        """The rows without their first `count` bytes; rows not in `keep` become NULL
        (kept rows must be at least `count` long)."""
        rows = object.__new__(Rows)
        rows.n, rows.values, rows._raw = self.n, self.values, None
        rows.present = self.present & keep
        rows.starts = np.where(rows.present, self.starts + count, self.starts)
        rows.ends = np.where(rows.present, self.ends, self.starts)
        return rows

    def raw(self) -> tuple[bytes, int]:
        """The bytes the rows lie in, and the buffer position they start at."""
        if self._raw is None:
            if self.n == 0:
                self._raw = (b"", 0)
            else:
                first, last = int(self.starts.min()), int(self.ends.max())
                self._raw = (self.values[first:last].tobytes(), first)
        return self._raw

    def heads(self, words: int, usable: np.ndarray) -> np.ndarray:
        """The first `words` words of each row, (n, words, 32); rows not `usable` get
        zeros. Usable rows must be at least that long."""
        n, size = self.n, 32 * words
        if n == 0 or size == 0:
            return np.zeros((n, words, 32), np.uint8)
        starts = self.starts
        step = int(starts[1] - starts[0]) if n > 1 else size
        if (
            step >= 0
            and int(starts[-1]) + size <= len(self.values)
            and (n == 1 or (np.diff(starts) == step).all())
        ):
            table = np.lib.stride_tricks.as_strided(
                self.values[int(starts[0]) :], shape=(n, size), strides=(step, 1), writeable=False
            )
            return table.reshape(n, words, 32)
        values = self.values
        if len(values) < size:
            values = np.concatenate([values, np.zeros(size, np.uint8)])
        starts = np.where(usable, starts, 0)
        out = np.empty((n, size), np.uint8)
        chunk = max(1, _GATHER_BYTES // size)
        span = np.arange(size)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            out[lo:hi] = values[starts[lo:hi, None] + span]
        return out.reshape(n, words, 32)


def decode_sequence(
    rows: Rows, types: Sequence[SolType], *, per_item_check: bool = False
) -> tuple[list[pa.Array], np.ndarray]:
    """Decode each row as the parameter sequence `types` (a log's data, a call's
    arguments). Returns one array per type and the mask of rows that decoded; rows that
    are NULL or did not decode are NULL in every array.

    Data shorter than the types' minimum encoding does not decode: all minimums summed
    (`per_item_check` False, as for event data) or, for each parameter, its head position
    plus its own minimum (function arguments are checked that way)."""
    n = rows.n
    heads_at, at = [], 0
    for t in types:
        heads_at.append(at)
        at += t.words
    head_words = at
    if per_item_check:
        need = max((h + t.min_words for h, t in zip(heads_at, types, strict=True)), default=0)
    else:
        need = sum(t.min_words for t in types)
    ok = rows.present & (rows.lengths // 32 >= need)
    raws: dict[int, list] = {}
    dynamic = [i for i, t in enumerate(types) if t.dynamic]
    if dynamic:
        buf, base = rows.raw()
        columns = {i: [None] * n for i in dynamic}
        for row in np.flatnonzero(ok):
            start = int(rows.starts[row]) - base
            end = int(rows.ends[row]) - base
            try:
                for i in dynamic:
                    reader = _Reader(buf, start, end)
                    reader.pos = 32 * heads_at[i]
                    columns[i][row] = _read(types[i], reader)
            except _Invalid:
                ok[row] = False
        raws = columns
    block = rows.heads(head_words, ok) if len(dynamic) < len(types) else None
    arrays = []
    for i, t in enumerate(types):
        if t.dynamic:
            values = [arrow_value(v, t) if ok[r] else None for r, v in enumerate(raws[i])]
            arrays.append(pa.array(values, t.arrow))
        else:
            part = block[:, heads_at[i] : heads_at[i] + t.words, :]
            arrays.append(decode_static(part, t, ok))
    return arrays, ok


def decode_single(rows: Rows, t: SolType) -> pa.Array:
    """Decode each row as one value of `t` (`abi.decode(data, (T))`): a dynamic value is
    found through the offset in the first word. NULL where a row does not decode."""
    if not t.dynamic:
        arrays, _ = decode_sequence(rows, [t])
        return arrays[0]
    buf, base = rows.raw()
    lengths = rows.lengths
    values = []
    for row in range(rows.n):
        if not rows.present[row] or lengths[row] // 32 < t.min_words:
            values.append(None)
            continue
        reader = _Reader(buf, int(rows.starts[row]) - base, int(rows.ends[row]) - base)
        try:
            raw = _read(t, reader)
        except _Invalid:
            values.append(None)
            continue
        values.append(arrow_value(raw, t))
    return pa.array(values, t.arrow)
