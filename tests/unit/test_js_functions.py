"""JavaScript functions in a real V8 isolate (mini-racer), called from DataFusion SQL."""

import pyarrow as pa
import pytest
from datafusion import SessionContext

from ampd.sql.functions import js
from ampd.sql.functions.errors import error_text
from ampd.sql.functions.js import JsFunction, js_udf


def fn(name: str, source: str, inputs, output) -> JsFunction:
    return JsFunction(name, tuple(inputs), output, source, f"{name}.js")


@pytest.fixture
def ctx() -> SessionContext:
    ctx = SessionContext()
    batch = pa.record_batch(
        {
            "n": pa.array([1, 2, None, 2**40], pa.int64()),
            "k": pa.array([3, None, 5, 7], pa.int32()),
            "b": pa.array([b"\x01\xff", b"", None, b"\x10"], pa.binary()),
            "s": pa.array(["a", "bc", None, "é"], pa.string()),
        }
    )
    ctx.register_record_batches("t", [[batch]])
    return ctx


def run(ctx: SessionContext, f: JsFunction, sql: str) -> list:
    ctx.register_udf(js_udf(f))
    return ctx.sql(sql).to_pydict()["r"]


def failure(ctx: SessionContext, f: JsFunction, sql: str) -> str:
    ctx.register_udf(js_udf(f))
    with pytest.raises(Exception) as caught:
        ctx.sql(sql).collect()
    own = error_text(str(caught.value))
    return own if own is not None else str(caught.value)


def test_values_cross_as_amps_runtime_passes_them(ctx: SessionContext):
    # 64-bit integers as BigInt, 32-bit ones as numbers, binary as Uint8Array, nulls as null.
    src = """function describe(n, k, b, s) {
        return [typeof n, n === null ? "-" : (n * 2n).toString(), typeof k,
                b === null ? "-" : Array.from(b).join("."), s].join("|") }"""
    f = fn("describe", src, [pa.int64(), pa.int32(), pa.binary(), pa.string()], pa.string())
    rows = run(ctx, f, "SELECT self.describe(n, k, b, s) AS r FROM t")
    assert rows == [
        "bigint|2|number|1.255|a",
        "bigint|4|object||bc",
        "object|-|number|-|",
        "bigint|2199023255552|number|16|é",
    ]


def test_results_become_the_declared_type(ctx: SessionContext):
    f = fn("grow", "function grow(n) { return n === null ? null : n * 1000000000000n }",
           [pa.int64()], pa.decimal128(38, 0))  # fmt: skip
    assert [None if v is None else int(v) for v in run(ctx, f, "SELECT self.grow(n) AS r FROM t")] == [
        10**12, 2 * 10**12, None, 2**40 * 10**12
    ]  # fmt: skip
    g = fn("tag", "function tag(s) { return new Uint8Array([s === null ? 0 : s.length, 7]) }",
           [pa.string()], pa.binary())  # fmt: skip
    assert run(ctx, g, "SELECT self.tag(s) AS r FROM t") == [
        b"\x01\x07",
        b"\x02\x07",
        b"\x00\x07",
        b"\x01\x07",
    ]


def test_a_function_that_throws_names_itself_and_the_row(ctx: SessionContext):
    f = fn("picky", 'function picky(k) { if (k === 5) throw new Error("five!"); return k }',
           [pa.int32()], pa.int32())  # fmt: skip
    message = failure(ctx, f, "SELECT self.picky(k) AS r FROM t")
    assert "JavaScript function self.picky: it threw" in message
    assert "row 2" in message and "five!" in message


def test_a_loop_is_stopped_at_the_time_limit_and_the_isolate_carries_on(ctx, monkeypatch):
    monkeypatch.setattr(js, "BATCH_TIMEOUT_SECS", 0.3)
    f = fn("spin", "function spin(k) { if (k === 7) { while (true) {} } return k }",
           [pa.int32()], pa.int32())  # fmt: skip
    udf = js_udf(f)
    ctx.register_udf(udf)
    with pytest.raises(Exception, match="self.spin: a batch of 4 rows ran past the time limit"):
        ctx.sql("SELECT self.spin(k) AS r FROM t").collect()
    assert ctx.sql("SELECT self.spin(k) AS r FROM t WHERE k < 7").to_pydict()["r"] == [3, 5]


def test_memory_is_bounded_and_a_new_isolate_follows(ctx, monkeypatch):
    monkeypatch.setattr(js, "MEMORY_LIMIT_BYTES", 64 * 1024 * 1024)
    src = """function hog(k) {
        if (k === 7) { const a = []; for (;;) a.push(new Array(1e6).fill(k)); }
        return k }"""
    f = fn("hog", src, [pa.int32()], pa.int32())
    ctx.register_udf(js_udf(f))
    with pytest.raises(Exception, match="self.hog: it ran out of memory"):
        ctx.sql("SELECT self.hog(k) AS r FROM t").collect()
    assert ctx.sql("SELECT self.hog(k) AS r FROM t WHERE k < 7").to_pydict()["r"] == [3, 5]


def test_a_result_the_type_cannot_hold_is_an_error(ctx: SessionContext):
    f = fn("words", 'function words(k) { return "not a number" }', [pa.int32()], pa.int32())
    assert "self.words: it returned a value that is not int32" in failure(
        ctx, f, "SELECT self.words(k) AS r FROM t"
    )


def test_a_source_that_does_not_load_or_define_the_function(ctx: SessionContext):
    broken = fn("oops", "function oops( {", [pa.int32()], pa.int32())
    assert "self.oops: its source oops.js does not load" in failure(
        ctx, broken, "SELECT self.oops(k) AS r FROM t"
    )
    other = fn("named", "function different(k) { return k }", [pa.int32()], pa.int32())
    assert "defines no function named" in failure(ctx, other, "SELECT self.named(k) AS r FROM t")
