"""JavaScript functions of derived datasets (`functions` in the manifest), run in V8.

A function is declared with its Arrow input types, its output type and its source, which
defines a JavaScript function of the same name:

    "functions": {"double": {"inputTypes": ["Int64"], "outputType": "Int64",
                             "source": {"source": "function double(x) { return x * 2n }",
                                        "filename": "double.js"}}}

SQL calls it as `self.double(x)`. Each function gets its own V8 isolate (mini-racer) with a
hard memory limit; DataFusion hands it whole batches, and one call into V8 runs the function
on every row of a batch, within a time limit. Values cross as Amp's runtime passes them:
integers of up to 32 bits and floats as numbers, 64-bit integers and decimals of scale 0 as
BigInt, strings as strings, binary as Uint8Array, lists as arrays, structs as objects, null
as null. A function that throws, runs past the time limit, exhausts its memory or returns a
value its output type cannot hold fails the query with an error naming the function and the
row; the process, and the isolate for the next batch, carry on.
"""

from __future__ import annotations

import decimal
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from datafusion import ScalarUDF, udf
from py_mini_racer import MiniRacer
from py_mini_racer import _exc as mini_racer_errors

from ampd.datasets.derived import DerivedFunction
from ampd.sql.functions.errors import FunctionError

__all__ = ["BATCH_TIMEOUT_SECS", "MEMORY_LIMIT_BYTES", "JsFunction", "js_udf"]

BATCH_TIMEOUT_SECS = 10.0  # one batch's calls
MEMORY_LIMIT_BYTES = 256 * 1024 * 1024  # one function's isolate

# Runs `name` on every row of a batch: arguments decoded by kind, results encoded so that
# BigInt and Uint8Array survive JSON.
_PRELUDE = r"""
function __ampd_decode(kind, v) {
  if (v === null) return null;
  if (kind === "big") return BigInt(v);
  if (kind === "bytes") {
    const out = new Uint8Array(v.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(v.substr(2 * i, 2), 16);
    return out;
  }
  if (Array.isArray(kind)) return v.map((x) => __ampd_decode(kind[0], x));
  if (typeof kind === "object") {
    const o = {};
    for (const k of Object.keys(kind)) o[k] = __ampd_decode(kind[k], v[k]);
    return o;
  }
  return v;
}
function __ampd_encode(key, v) {
  if (typeof v === "bigint") return { $big: v.toString() };
  if (v instanceof Uint8Array) {
    let h = "";
    for (const b of v) h += b.toString(16).padStart(2, "0");
    return { $hex: h };
  }
  return v === undefined ? null : v;
}
function __ampd_batch(name, kinds, payload) {
  const fn = globalThis[name];
  if (typeof fn !== "function") throw new Error("the source defines no function " + name);
  const rows = JSON.parse(payload);
  const out = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    try {
      out[i] = fn(...rows[i].map((v, j) => __ampd_decode(kinds[j], v)));
    } catch (e) {
      throw new Error("row " + i + ": " + (e && e.stack ? e.stack : e));
    }
  }
  return JSON.stringify(out, __ampd_encode);
}
"""


# A declared function: name, input types, output type, source, filename.
JsFunction = DerivedFunction


# V8 must not be set up by two threads at once (it aborts the process): isolates are made
# one at a time, and each function's isolate serves every query that calls it.
_SETUP = threading.Lock()
_RUNTIMES: dict[JsFunction, _Runtime] = {}


def js_udf(fn: JsFunction, sql_name: str | None = None) -> ScalarUDF:
    """The DataFusion UDF of `fn`, called `sql_name` in SQL (default `self.<name>`)."""
    with _SETUP:
        runtime = _RUNTIMES.get(fn)
        if runtime is None:
            runtime = _RUNTIMES[fn] = _Runtime(fn)
    return udf(
        runtime.call,
        list(fn.input_types),
        fn.output_type,
        "immutable",
        sql_name or f"self.{fn.name}",
    )


class _Runtime:
    """One function's isolate; batches run one at a time, on the isolate's thread."""

    def __init__(self, fn: JsFunction) -> None:
        self.fn = fn
        self.kinds = [_kind(t, fn.name) for t in fn.input_types]
        # The isolate lives on a thread of its own: mini-racer bounds a call's time only on
        # a thread without a running event loop, and DataFusion may call from any thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"js-{fn.name}")
        self._ctx: MiniRacer | None = None

    def _isolate(self) -> MiniRacer:
        if self._ctx is None:
            with _SETUP:
                ctx = MiniRacer()
            ctx.set_hard_memory_limit(MEMORY_LIMIT_BYTES)
            try:
                ctx.eval(_PRELUDE)
                ctx.eval(self.fn.source, timeout_sec=BATCH_TIMEOUT_SECS)
            except mini_racer_errors.MiniRacerBaseException as exc:
                raise self._error(f"its source {self.fn.filename} does not load: {exc}") from None
            self._ctx = ctx
        return self._ctx

    def call(self, *arrays: pa.Array) -> pa.Array:
        rows = len(arrays[0]) if arrays else 1
        columns = [_encode_column(a, k) for a, k in zip(arrays, self.kinds, strict=True)]
        payload = json.dumps(
            [list(r) for r in zip(*columns, strict=True)] if columns else [[]] * rows
        )
        text = self._thread.submit(self._batch, rows, payload).result()
        return self._result(json.loads(text, object_hook=_decode_object))

    def _batch(self, rows: int, payload: str) -> str:
        """One batch in the isolate, on its thread; raises FunctionError."""
        ctx = self._isolate()
        try:
            return ctx.call(
                "__ampd_batch", self.fn.name, self.kinds, payload, timeout_sec=BATCH_TIMEOUT_SECS
            )
        except mini_racer_errors.JSTimeoutException:
            raise self._error(
                f"a batch of {rows} rows ran past the time limit of {BATCH_TIMEOUT_SECS:g} s"
            ) from None
        except mini_racer_errors.MiniRacerBaseException as exc:
            if isinstance(exc, mini_racer_errors.JSOOMException) or (
                ctx.was_hard_memory_limit_reached()
            ):
                self._ctx = None  # an isolate past its limit is not used again
                raise self._error(
                    f"it ran out of memory (limit {MEMORY_LIMIT_BYTES // 2**20} MiB)"
                ) from None
            raise self._error(f"it threw: {_first_lines(str(exc))}") from None

    def _result(self, values: list[Any]) -> pa.Array:
        out = self.fn.output_type
        if pa.types.is_decimal(out):
            values = [None if v is None else decimal.Decimal(v) for v in values]
        try:
            return pa.array(values, out)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise self._error(f"it returned a value that is not {out}: {exc}") from None

    def _error(self, what: str) -> FunctionError:
        return FunctionError(f"JavaScript function self.{self.fn.name}: {what}")


def _kind(t: pa.DataType, name: str) -> Any:
    """How a value of `t` crosses into JavaScript (see the prelude)."""
    if pa.types.is_int64(t) or pa.types.is_uint64(t):
        return "big"
    if pa.types.is_decimal(t):
        if t.scale != 0:
            raise FunctionError(f"JavaScript function self.{name}: {t} has no JavaScript form")
        return "big"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_kind(t.value_type, name)]
    if pa.types.is_struct(t):
        return {t.field(i).name: _kind(t.field(i).type, name) for i in range(t.num_fields)}
    return "value"


def _encode_column(array: pa.Array, kind: Any) -> Sequence[Any]:
    return [_encode(v, kind) for v in array.to_pylist()]


def _encode(v: Any, kind: Any) -> Any:
    """A Python value as JSON for the prelude's decoding by `kind`."""
    if v is None:
        return None
    if kind == "big":
        return str(int(v))
    if kind == "bytes":
        return v.hex()
    if isinstance(kind, list):
        return [_encode(x, kind[0]) for x in v]
    if isinstance(kind, dict):
        return {k: _encode(v.get(k), sub) for k, sub in kind.items()}
    return v


def _decode_object(obj: dict) -> Any:
    if obj.keys() == {"$big"}:
        return int(obj["$big"])
    if obj.keys() == {"$hex"}:
        return bytes.fromhex(obj["$hex"])
    return obj


def _first_lines(text: str, n: int = 4) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[:n] if line.strip())
