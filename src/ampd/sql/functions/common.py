"""Pieces the function modules share: building a DataFusion ScalarUDF, reading an
argument that Amp requires to be a single (literal) value, and FixedSizeBinary columns as
numpy arrays."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from datafusion import ScalarUDF, udf

from ampd.sql.functions.errors import AbiError, FunctionError, df_type_name


@dataclass(frozen=True)
class Built:
    """A function ready to register: its Python body and its argument/result types.
    With `memo`, the body remembers its last results by the identity of its first
    `memo` arguments (see `remembered`)."""

    body: Callable[..., pa.Array]
    inputs: list[pa.DataType]
    result: pa.Field
    memo: int = 0
    volatility: str = "immutable"  # "volatile" for a function whose answer may change

    def udf(self, name: str) -> ScalarUDF:
        body = remembered(self.body, self.memo) if self.memo else self.body
        return udf(body, self.inputs, self.result, self.volatility, name)


def _identity(column: pa.Array) -> tuple:
    return (
        len(column),
        column.offset,
        tuple(b.address if b is not None else 0 for b in column.buffers()),
    )


def remembered(body: Callable[..., pa.Array], count: int, size: int = 4) -> Callable[..., pa.Array]:
    """`body` answering again from its last `size` results for the same input columns.

    DataFusion inlines a subquery's column into each use, so `d.a, d.b, d.c` over
    `evm_decode_log(...) AS d` calls the decoder three times on the same batch. Columns
    are the same when their buffers are (Arrow buffers do not change); keeping the
    columns of a remembered call alive keeps their memory from being reused for other
    data. Only the first `count` arguments are compared (the rest are literals, which
    DataFusion hands over as a fresh column each call)."""
    lock = threading.Lock()
    recent: OrderedDict[tuple, tuple[tuple, pa.Array]] = OrderedDict()

    def run(*columns: pa.Array) -> pa.Array:
        key = tuple(_identity(c) for c in columns[:count])
        with lock:
            hit = recent.get(key)
            if hit is not None:
                recent.move_to_end(key)
                return hit[1]
        result = body(*columns)
        with lock:
            recent[key] = (columns[:count], result)
            while len(recent) > size:
                recent.popitem(last=False)
        return result

    return run


def single_text(values: pa.Array, error: str, context: str = "") -> str | None:
    """The one value of a text column that Amp takes as a literal (DataFusion hands a
    literal to a Python function as a column repeating it). `error` is raised when the
    rows differ, as Amp refuses a non-literal; None when the column is empty; a NULL
    gives Amp's message for a NULL literal (after `context`, where Amp names the
    function)."""
    if len(values) == 0:
        return None
    distinct = values.unique()
    if len(distinct) != 1:
        raise FunctionError(error)
    value = distinct[0].as_py()
    if value is None:
        raise FunctionError(f"{context}expected Utf8, got {df_type_name(values.type)}")
    return value


def words_of(column: pa.Array) -> np.ndarray:
    """A FixedSizeBinary(32) column as an (n, 32) uint8 array (no copy)."""
    n = len(column)
    data = column.buffers()[1]
    if data is None or n == 0:
        return np.zeros((n, 32), np.uint8)
    raw = np.frombuffer(data, np.uint8)
    return raw[column.offset * 32 : (column.offset + n) * 32].reshape(n, 32)


def present(column: pa.Array) -> np.ndarray:
    if column.null_count == 0:
        return np.ones(len(column), bool)
    return ~column.is_null().to_numpy(zero_copy_only=False)


def failing(error: str, result: pa.DataType) -> Callable[..., pa.Array]:
    """A body that raises `error` as soon as it is given a row (Amp fails on the first
    row, so an empty input is no error)."""

    def body(*columns: pa.Array) -> pa.Array:
        if not columns or len(columns[0]):
            raise FunctionError(error)
        return pa.array([], result)

    return body


def repeat(value: bytes, n: int) -> pa.Array:
    """`value` n times, as FixedSizeBinary(len(value))."""
    data = np.tile(np.frombuffer(value, np.uint8), n)
    return pa.Array.from_buffers(pa.binary(len(value)), n, [None, pa.py_buffer(data)])


def encoder(
    name: str,
    inputs: list[pa.DataType],
    literal: str | None,
    plan: Callable[[str], object],
    run: Callable[[object, list[pa.Array], int], pa.Array],
    not_literal: str,
    context: str = "",
) -> Built:
    """An encoding function whose last argument (a type or a signature) Amp wants as a
    literal. `plan(text)` checks that text against the argument types (FunctionError
    with Amp's text); `run(planned, columns, rows)` encodes. With no literal the text is read
    from the column when the function runs (`not_literal` if the rows differ; `context`
    before the message for a NULL one). Amp reports these errors when the function
    runs, so they wait for the first row."""
    result = pa.field(name, pa.binary())
    planned = None
    if literal is not None:
        try:
            planned = plan(literal)
        except FunctionError as exc:
            return Built(failing(str(exc), pa.binary()), inputs, result)

    def body(*columns: pa.Array) -> pa.Array:
        chosen = planned
        if chosen is None:
            text = single_text(columns[-1], not_literal, context)
            if text is None:
                return pa.array([], pa.binary())
            chosen = plan(text)
        try:
            return run(chosen, list(columns[:-1]), len(columns[-1]))
        except AbiError as exc:
            raise FunctionError(str(exc)) from None

    return Built(body, inputs, result)
