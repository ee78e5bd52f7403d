"""shift_units(value, units): the value with its decimal point moved `units` places
(right for positive units, left for negative), as exact decimal text without trailing
zeros, e.g. shift_units('1500000000000000000', -18) = '1.5'.

The value may be an integer, float, decimal or Utf8 decimal text; units an integer or
Utf8 integer text, at most 32 places either way. Integer text (what integer and decimal
columns and decoded uint256 values give) is shifted a whole column at a time by moving
its digits with numpy; other text and floats go through Python's decimal arithmetic.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ampd.sql.functions.common import Built, present
from ampd.sql.functions.errors import FunctionError, df_type_name

NAME = "shift_units"
MAX_UNITS = 32
_ZERO, _MINUS, _DOT = ord("0"), ord("-"), ord(".")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_EXACT = Context(prec=4000, Emax=999999, Emin=-999999)
_I64 = re.compile(r"[+-]?\d+")


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def check_types(value: pa.DataType | str, units: pa.DataType | str) -> None:
    """Amp's planning checks; a type DataFusion reported but pyarrow has no name for
    comes as its display text."""
    if isinstance(value, str) or not (
        (_numeric(value) and not pa.types.is_float16(value)) or value == pa.string()
    ):
        name = value if isinstance(value, str) else df_type_name(value)
        raise FunctionError(f"{NAME}: expected numeric type or Utf8 for first argument, got {name}")
    if isinstance(units, str) or not (pa.types.is_integer(units) or units == pa.string()):
        name = units if isinstance(units, str) else df_type_name(units)
        raise FunctionError(f"{NAME}: expected numeric type for second argument, got {name}")


def _plain(value: Decimal) -> str:
    text = format(value.normalize(_EXACT), "f")
    return "0" if text in ("-0", "0") else text


def _shift_decimal(value: Decimal, units: int) -> str:
    return _plain(value.scaleb(units, _EXACT))


def _parse_integer(text: str) -> int:
    if not text:
        raise FunctionError(
            f"{NAME}: failed to parse integer: cannot parse integer from empty string"
        )
    if not _I64.fullmatch(text):
        raise FunctionError(f"{NAME}: failed to parse integer: invalid digit found in string")
    value = int(text)
    if not -(1 << 63) <= value < (1 << 63):
        side = "large" if value > 0 else "small"
        raise FunctionError(
            f"{NAME}: failed to parse integer: number too {side} to fit in target type"
        )
    return value


def _units(column: pa.Array, literal: bool) -> np.ndarray:
    """Units per row, as Amp reads them (a NULL in a units column counts as 1)."""
    if column.null_count and literal:
        raise FunctionError(f"{NAME}: expected numeric or string scalar")
    if literal and len(column):
        head = column.slice(0, 1)
        if pa.types.is_integer(head.type):
            value = int(head.to_numpy().astype(np.int64)[0])
        else:
            value = _parse_integer(head[0].as_py())
        return np.full(len(column), value, np.int64)
    if pa.types.is_integer(column.type):
        values = column.fill_null(1).to_numpy()
        return values.astype(np.int64)  # an unsigned 64-bit value wraps, as in Amp
    distinct = {v: (1 if v is None else _parse_integer(v)) for v in column.unique().to_pylist()}
    return np.array([distinct[v] for v in column.to_pylist()], np.int64)


def _text_value(text: str, literal: bool) -> Decimal:
    if _NUMBER.fullmatch(text):
        return Decimal(text)
    reason = "Failed to parse empty string" if not text else "invalid digit found in string"
    if literal:
        raise FunctionError(f"{NAME}: failed to parse value: {reason}")
    raise FunctionError(f"{NAME}: failed to convert String to BigDecimal: {reason}")


def _float_value(value: float, single: bool, literal: bool) -> Decimal:
    if not np.isfinite(value):
        what = (
            f"failed to parse float{32 if single else 64}"
            if literal
            else "failed to convert String to BigDecimal"
        )
        raise FunctionError(f"{NAME}: {what}: invalid digit found in string")
    return Decimal(str(np.float32(value)) if single else repr(value))


def _canonical(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Rows that are plain integers: digits, an optional '-', no leading zero."""
    n = len(starts)
    if n == 0 or len(data) == 0:
        return np.zeros(n, bool)
    lo, hi = int(starts[0]), int(ends[-1])
    odd = np.flatnonzero((data[lo:hi] - _ZERO) >= 10) + lo
    row = np.searchsorted(ends, odd, side="right")
    minus = (odd == starts[np.minimum(row, n - 1)]) & (data[odd] == _MINUS)
    ok = np.ones(n, bool)
    ok[row[~minus]] = False
    negative = np.zeros(n, bool)
    negative[row[minus]] = True
    last = max(len(data) - 1, 0)
    begin = starts + negative
    length = ends - begin
    lead = data[np.minimum(begin, last)]
    zero = (length == 1) & (lead == _ZERO)
    return ok & (length >= 1) & ((length == 1) | (lead != _ZERO)) & ~(negative & zero)


def _trailing_zeros(data: np.ndarray, begin: np.ndarray, ends: np.ndarray, cap: int) -> np.ndarray:
    """Trailing '0' digits of each row, at most `cap` (and fewer than the row's digits)."""
    count = np.zeros(len(ends), np.int64)
    rows = np.flatnonzero(ends - 1 > begin)
    for j in range(cap):
        at = ends[rows] - 1 - j
        rows = rows[(at > begin[rows]) & (data[at] == _ZERO)]
        if not len(rows):
            break
        count[rows] += 1
    return count


def _insert(data: np.ndarray, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`data` with values[i] inserted before data[positions[i]] (positions sorted)."""
    spots = positions + np.arange(len(positions))
    out = np.empty(len(data) + len(values), np.uint8)
    inserted = np.zeros(len(out), bool)
    inserted[spots] = True
    out[spots] = values
    out[~inserted] = data
    return out


def _shift_text(text: pa.Array, k: int, rows: np.ndarray) -> pa.Array:
    """`text` (Utf8) with the plain-integer rows in `rows` shifted by k places; other
    rows come back as empty strings. Done as edits of the whole data buffer: the
    trailing zeros a left shift leaves after the point are deleted, then the point (or
    "0." and leading zeros, or a right shift's zeros) inserted."""
    n = len(text)
    buffers = text.buffers()
    offsets = np.frombuffer(buffers[1], np.int32, count=n + 1, offset=text.offset * 4)
    offsets = offsets.astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(buffers[2], np.uint8)[lo:hi] if hi > lo else np.zeros(1, np.uint8)
    starts, ends = offsets[:-1] - lo, offsets[1:] - lo
    last = max(hi - lo - 1, 0)
    negative = rows & (data[np.minimum(starts, last)] == _MINUS)
    begin = starts + negative
    length = ends - begin
    zero = rows & (length == 1) & (data[np.minimum(begin, last)] == _ZERO)
    live = rows & ~zero
    sizes = np.where(rows, ends - starts, 0)
    removed = np.where(rows, 0, ends - starts)  # bytes deleted from the end of each row
    at: list[np.ndarray] = []  # insertion positions
    of: list[np.ndarray] = []  # the row of each
    put: list[np.ndarray] = []  # the byte inserted
    index = np.arange(n)
    if k > 0:
        of.append(np.repeat(index[live], k))
        at.append(ends[of[0]])
        put.append(np.full(len(at[0]), _ZERO, np.uint8))
        sizes = sizes + k * live
    elif k < 0:
        m = -k
        trailing = np.where(live, _trailing_zeros(data, begin, ends, m), 0)
        removed = removed + trailing
        point = live & (length > m) & (trailing < m)
        of.append(index[point])
        at.append(ends[point] - m)
        put.append(np.full(int(point.sum()), _DOT, np.uint8))
        narrow = live & (length <= m)
        count = (2 + m - length)[narrow]
        of.append(np.repeat(index[narrow], count))
        at.append(begin[of[-1]])
        digits = np.full(len(of[-1]), _ZERO, np.uint8)
        digits[np.cumsum(count) - count + 1] = _DOT
        put.append(digits)
        sizes = sizes - trailing + point + np.where(narrow, 2 + m - length, 0)
    kept_len = ends - starts - removed
    if removed.any():
        runs = np.empty(2 * n, np.int64)
        runs[0::2], runs[1::2] = kept_len, removed
        keep = np.repeat(np.tile(np.array([True, False]), n), runs)
        kept = data[: hi - lo][keep]
    else:
        kept = data[: hi - lo]
    if at:
        # An insertion lies before its row's deleted tail: only earlier rows' deletions move it.
        shift = np.cumsum(removed) - removed
        position = np.concatenate(at) - shift[np.concatenate(of)]
        order = np.argsort(position, kind="stable")
        kept = _insert(kept, position[order], np.concatenate(put)[order])
    out_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=out_offsets[1:])
    if len(kept) < (1 << 31):
        return pa.Array.from_buffers(
            pa.string(), n, [None, pa.py_buffer(out_offsets.astype(np.int32)), pa.py_buffer(kept)]
        )
    return pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(out_offsets), pa.py_buffer(kept)]
    ).cast(pa.string())


def _integer_text(values: pa.Array) -> tuple[pa.Array, int]:
    """Integer-valued columns as plain integer text (a decimal's unscaled integer), and
    the shift that turns the text into the value (minus the decimal's scale)."""
    t = values.type
    if pa.types.is_decimal(t):
        scale = t.scale
        if scale:
            unscaled = pa.decimal128(38, 0) if pa.types.is_decimal128(t) else pa.decimal256(76, 0)
            values = pa.Array.from_buffers(
                unscaled, len(values), values.buffers(), offset=values.offset
            )
        return pc.cast(values, pa.string()), -scale
    return pc.cast(values, pa.string()), 0


def shift_units(
    value_type: pa.DataType, units_type: pa.DataType, *, value_literal=False, units_literal=False
) -> Built:
    """`*_literal`: the argument is a literal in the query (Amp reports a literal's
    problems with other texts than a column's)."""
    check_types(value_type, units_type)

    def body(values: pa.Array, units_column: pa.Array) -> pa.Array:
        n = len(values)
        units = _units(units_column, units_literal)
        have = present(values)
        if value_literal and not have.all():
            raise FunctionError(f"{NAME}: value must be a non-null numeric type")
        t = values.type
        base = 0
        exact: list[Decimal | None] | None = None
        if pa.types.is_floating(t):
            single = pa.types.is_float32(t)
            exact = [
                None if v is None else _float_value(v, single, value_literal)
                for v in values.to_pylist()
            ]
            text = None
        elif t == pa.string():
            text = values
        else:
            text, base = _integer_text(values)
        fast = np.zeros(n, bool)
        if text is not None:
            buffers = text.buffers()
            offsets = np.frombuffer(
                buffers[1], np.int32, count=n + 1, offset=text.offset * 4
            ).astype(np.int64)
            data = (
                np.frombuffer(buffers[2], np.uint8)
                if buffers[2] is not None
                else np.zeros(0, np.uint8)
            )
            fast = have & _canonical(data, offsets[:-1], offsets[1:])
            slow = np.flatnonzero(have & ~fast)
            if len(slow):
                strings = text.take(pa.array(slow)).to_pylist()
                exact = [None] * n
                for row, s in zip(slow, strings, strict=True):
                    exact[row] = _text_value(s, value_literal).scaleb(base, _EXACT)
        bad = have & (units != 0) & (np.abs(units) > MAX_UNITS)
        if bad.any():
            got = int(units[np.flatnonzero(bad)[0]])
            raise FunctionError(
                f"{NAME}: units must be between -{MAX_UNITS} and {MAX_UNITS} (got {got})"
            )
        result: pa.Array | None = None
        if fast.any():
            k = int(units[np.flatnonzero(fast)[0]])
            same = (units[fast] == k).all()
            if same:
                result = _shift_text(text, k + base, fast)
            else:
                exact = exact or [None] * n
                strings = text.to_pylist()
                for row in np.flatnonzero(fast):
                    exact[row] = Decimal(strings[row]).scaleb(base, _EXACT)
                fast[:] = False
        out = result if result is not None else pa.array([""] * n, pa.string())
        others = np.flatnonzero(have & ~fast)
        if len(others):
            shifted = [_shift_decimal(exact[row], int(units[row])) for row in others]
            mask = np.zeros(n, bool)
            mask[others] = True
            out = pc.replace_with_mask(out, pa.array(mask), pa.array(shifted, pa.string()))
        if not have.all():
            out = pc.if_else(pa.array(have), out, pa.scalar(None, pa.string()))
        return out

    return Built(body, [value_type, units_type], pa.field(NAME, pa.string()))
