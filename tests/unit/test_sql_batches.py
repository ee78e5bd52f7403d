"""Result batches through BatchStream on a real DataFusion plan: small batches coalesced for
results that are not streams, in order, and an error raised only after the rows before it."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from datafusion import SessionContext

from ampd.sql.batches import COALESCE_ROWS, BatchStream
from ampd.sql.catalog import CatalogSnapshot
from ampd.sql.engine import Limits, MemoryBudget, QueryError

ROWS = 60


def cross_join(ctx: SessionContext, copies: int):  # noqa: ANN201 - a datafusion DataFrame
    """ROWS x ROWS x copies rows, which DataFusion emits in batches of ROWS rows."""
    ctx.register_record_batches("t", [[pa.record_batch({"n": pa.array(range(ROWS), pa.int64())})]])
    return ctx.sql(
        f"SELECT a.n AS a, b.n AS b, c.n AS c FROM t a, t b, (SELECT n FROM t LIMIT {copies}) c"
    )


async def drain(stream: BatchStream, coalesced: bool) -> list[pa.RecordBatch]:
    pull = stream.next_coalesced if coalesced else stream.next
    out = []
    while (batch := await pull()) is not None:
        out.append(batch)
    return out


@pytest.mark.parametrize("copies", [1, 10, 60])
async def test_small_batches_are_coalesced_in_order(copies: int) -> None:
    rows = ROWS * ROWS * copies
    plain = await drain(
        await BatchStream.open(cross_join(SessionContext(), copies), Limits(), CatalogSnapshot()),
        coalesced=False,
    )
    assert max(b.num_rows for b in plain) <= ROWS  # what DataFusion hands out
    coalesced = await drain(
        await BatchStream.open(cross_join(SessionContext(), copies), Limits(), CatalogSnapshot()),
        coalesced=True,
    )
    assert sum(b.num_rows for b in coalesced) == rows
    assert len(coalesced) == math.ceil(rows / COALESCE_ROWS)
    assert all(b.num_rows >= COALESCE_ROWS for b in coalesced[:-1])
    together = pa.Table.from_batches(coalesced)
    assert together.equals(pa.Table.from_batches(plain))


async def test_an_error_comes_after_the_rows_before_it() -> None:
    ctx = SessionContext()
    ctx.register_record_batches("t", [[pa.record_batch({"n": pa.array(range(ROWS), pa.int64())})]])
    # Rows until n reaches 59, where the cast fails: the rows before arrive first.
    frame = ctx.sql(
        "SELECT a.n, CAST(CASE WHEN a.n = 59 AND b.n = 59 THEN 'x' ELSE '1' END AS INT) AS v "
        "FROM t a, t b"
    )
    stream = await BatchStream.open(frame, Limits(), CatalogSnapshot())
    received = 0
    with pytest.raises(QueryError) as failed:
        while (batch := await stream.next_coalesced()) is not None:
            received += batch.num_rows
    assert failed.value.code == "QUERY_FAILED"
    assert 0 < received < ROWS * ROWS


# -- the server's memory budget (max_mem_mb) --


def test_a_query_pool_is_its_own_limit_within_the_budget() -> None:
    budget = MemoryBudget(64)
    assert Limits(max_mem_mb=40, budget=budget).pool_mb == 40
    assert Limits(max_mem_mb=100, budget=budget).pool_mb == 64
    assert Limits(max_mem_mb=0, budget=budget).pool_mb == 64
    assert Limits(max_mem_mb=40).pool_mb == 40 and Limits().pool_mb == 0


async def test_streams_hold_their_pools_until_they_end() -> None:
    budget = MemoryBudget(64)
    limits = Limits(max_mem_mb=40, timeout_secs=0, budget=budget)
    first = await BatchStream.open(cross_join(SessionContext(), 1), limits, CatalogSnapshot())
    assert budget.held_mb == 40
    # A second pool of 40 MB does not fit next to the first: it waits, then fails.
    short = Limits(max_mem_mb=40, timeout_secs=0.3, budget=budget)
    with pytest.raises(QueryError) as refused:
        await BatchStream.open(cross_join(SessionContext(), 1), short, CatalogSnapshot())
    assert refused.value.code == "QUERY_FAILED"
    assert str(refused.value).startswith("Resources exhausted: the query's memory pool of 40 MB")
    assert "max_mem_mb = 64 within query_timeout_secs = 0.3" in str(refused.value)
    assert budget.held_mb == 40
    await drain(first, coalesced=False)  # its end gives the pool back, once
    first.cancel()
    assert budget.held_mb == 0
    second = await BatchStream.open(cross_join(SessionContext(), 1), limits, CatalogSnapshot())
    assert budget.held_mb == 40
    del second  # dropped without cancel(): collected, the pool goes back too
    import gc

    gc.collect()
    assert budget.held_mb == 0


async def test_a_waiting_query_starts_when_a_running_one_ends() -> None:
    import asyncio

    budget = MemoryBudget(64)
    limits = Limits(max_mem_mb=40, timeout_secs=0, budget=budget)
    first = await BatchStream.open(cross_join(SessionContext(), 1), limits, CatalogSnapshot())
    waiting = asyncio.ensure_future(
        BatchStream.open(cross_join(SessionContext(), 1), limits, CatalogSnapshot())
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()  # no time limit: it waits as long as the first runs
    first.cancel()
    second = await asyncio.wait_for(waiting, 10)
    assert budget.held_mb == 40 and len(await drain(second, coalesced=True)) >= 1
    second.cancel()
    assert budget.held_mb == 0
