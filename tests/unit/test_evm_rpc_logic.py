"""Pure logic of the evm-rpc client: pacing, stream framing, answer matching, receipt checks."""

from __future__ import annotations

import pytest

from ampd.providers.config import parse_provider
from ampd.providers.evm_rpc.blocks import block_problem, match_receipts
from ampd.providers.evm_rpc.client import _batch_results, _Failed, _result
from ampd.providers.evm_rpc.errors import status_failure
from ampd.providers.evm_rpc.limits import RateLimiter, backoff_delay
from ampd.providers.evm_rpc.pool import ProviderPool
from ampd.providers.evm_rpc.transport import JsonStream

# --- rate limit ---


def test_rate_limiter_one_a_second():
    limiter = RateLimiter(60)
    assert (limiter.interval, limiter.burst) == (1.0, 1)
    assert [limiter.reserve(0.0) for _ in range(4)] == [0.0, 1.0, 2.0, 3.0]
    # After a pause the bucket has refilled, but only up to its burst.
    assert limiter.reserve(100.0) == 0.0
    assert limiter.reserve(100.0) == 1.0


def test_rate_limiter_bursts_a_seconds_worth():
    limiter = RateLimiter(600)  # 10 a second
    delays = [limiter.reserve(0.0) for _ in range(15)]
    assert delays[:10] == [0.0] * 10
    assert delays[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_rate_limiter_never_exceeds_rate_over_a_minute():
    limiter = RateLimiter(120)
    starts = []
    now = 0.0
    for _ in range(1000):
        now += limiter.reserve(now)
        starts.append(now)
    # In any 60 s window: at most the rate plus one burst.
    for i, t in enumerate(starts):
        in_window = sum(1 for s in starts[i:] if s < t + 60)
        assert in_window <= 120 + limiter.burst


async def test_rate_limiter_acquire_sleeps_the_reserved_delay():
    slept = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(60, clock=lambda: 5.0, sleep=sleep)
    for _ in range(3):
        await limiter.acquire()
    assert slept == [1.0, 2.0]


def test_backoff_grows_caps_and_jitters():
    assert backoff_delay(1, base=0.1, cap=5, rand=lambda: 1.0) == pytest.approx(0.1)
    assert backoff_delay(3, base=0.1, cap=5, rand=lambda: 1.0) == pytest.approx(0.4)
    assert backoff_delay(3, base=0.1, cap=5, rand=lambda: 0.0) == pytest.approx(0.2)
    assert backoff_delay(50, base=0.1, cap=5, rand=lambda: 1.0) == 5
    assert backoff_delay(10_000, base=0.1, cap=5, rand=lambda: 0.0) == 2.5


# --- IPC stream framing ---


def test_json_stream_splits_lines_and_partial_reads():
    s = JsonStream()
    assert s.feed(b'{"id":1,"result":"0x1"}\n{"id":2,') == [{"id": 1, "result": "0x1"}]
    assert s.feed(b'"result":[1,2]}') == [{"id": 2, "result": [1, 2]}]
    assert s.feed(b'\n[{"id":3}]\n') == [[{"id": 3}]]
    assert s.buffered == 0


def test_json_stream_values_back_to_back_or_over_lines():
    s = JsonStream()
    assert s.feed(b'{"a":1}{"b":2}') == [{"a": 1}, {"b": 2}]
    assert s.feed(b'{"x":\n') == []
    assert s.feed(b' "y\\n"}\n') == [{"x": "y\n"}]


def test_json_stream_utf8_split_across_reads():
    data = '{"s":"é"}\n'.encode()
    s = JsonStream()
    cut = data.index(b"\xa9")  # inside the two-byte é
    assert s.feed(data[:cut]) == []
    assert s.feed(data[cut:]) == [{"s": "é"}]


def test_json_stream_drops_garbage_before_a_whole_line():
    s = JsonStream()
    assert s.feed(b"garbage\n") == []
    assert s.feed(b'{"id":7}\n') == [{"id": 7}]
    assert s.buffered == 0


# --- matching answers to calls ---


def test_single_answer():
    assert _result({"jsonrpc": "2.0", "id": 3, "result": None}, 3) is None
    assert (
        "error -32000: boom"
        in _result({"id": 3, "error": {"code": -32000, "message": "boom"}}, 3).reason
    )
    assert "id 4" in _result({"id": 4, "result": 1}, 3).reason
    assert "neither" in _result({"id": 3}, 3).reason
    assert isinstance(_result([1], 3), _Failed)


def test_batch_answer_in_any_order():
    answer = [{"id": 2, "result": "b"}, {"id": 1, "result": "a"}, {"id": 3, "result": "c"}]
    assert _batch_results(answer, [1, 2, 3]) == ["a", "b", "c"]


def test_batch_answer_missing_and_duplicate_ids_fail_only_those_calls():
    answer = [{"id": 1, "result": "a"}, {"id": 3, "result": "c"}, {"id": 3, "result": "c"}]
    got = _batch_results(answer, [1, 2, 3])
    assert got[0] == "a"
    assert "missing" in got[1].reason
    assert "answered 2 times" in got[2].reason


def test_batch_answer_with_unknown_id_fails_all():
    got = _batch_results([{"id": 1, "result": "a"}, {"id": 99, "result": "?"}], [1, 2])
    assert all(isinstance(g, _Failed) and "unknown ids 99" in g.reason for g in got)


def test_batch_answered_with_one_error_object():
    got = _batch_results({"id": None, "error": {"code": -32600, "message": "too big"}}, [1, 2])
    assert all("too big" in g.reason for g in got)


def test_http_status_classification():
    for status in (408, 429, 500, 502, 503, 504):
        assert status_failure(status, "x", b"").retryable
    for status in (301, 400, 401, 403, 404, 405, 413):
        assert not status_failure(status, "x", b"").retryable
    assert "auth_token" in status_failure(401, "Unauthorized", b"").reason
    assert "details" in status_failure(400, "Bad Request", b"details").reason


# --- blocks and receipts ---

HASH = "0x" + "aa" * 32


def block(n: int, txs: list[str], hash_: str = HASH) -> dict:
    return {
        "number": hex(n),
        "hash": hash_,
        "transactions": [{"hash": h, "transactionIndex": hex(i)} for i, h in enumerate(txs)],
    }


def receipt(tx: str, index: int, block_hash: str = HASH) -> dict:
    return {"transactionHash": tx, "transactionIndex": hex(index), "blockHash": block_hash}


def test_block_problems():
    assert block_problem(5, block(5, ["0x1"])) is None
    assert "is block 6" in block_problem(5, block(6, []))
    assert "JSON object" in block_problem(5, "0x5")
    assert "full transaction" in block_problem(
        5, {"number": "0x5", "hash": HASH, "transactions": ["0x1"]}
    )


def test_receipts_are_put_in_transaction_order():
    b = block(1, ["0xa", "0xb", "0xc"])
    ordered, problem = match_receipts(b, [receipt("0xc", 2), receipt("0xa", 0), receipt("0xb", 1)])
    assert problem is None
    assert [r["transactionHash"] for r in ordered] == ["0xa", "0xb", "0xc"]


@pytest.mark.parametrize(
    ("receipts", "expected"),
    [
        (None, "no receipts"),
        ([receipt("0xa", 0)], "1 receipts for 2 transactions"),
        ([receipt("0xa", 0), receipt("0xc", 1)], "is for transaction 0xc"),
        ([receipt("0xa", 0), receipt("0xb", 1, "0x" + "bb" * 32)], "is from block"),
        ([receipt("0xa", 0), {"transactionHash": "0xb"}], "transactionIndex"),
    ],
)
def test_receipts_that_do_not_match(receipts, expected):
    ordered, problem = match_receipts(block(1, ["0xa", "0xb"]), receipts)
    assert ordered == [] and expected in problem


# --- pool choice ---


def test_pool_round_robin_and_cool_down():
    now = [0.0]
    configs = [
        parse_provider(name, {"kind": "evm-rpc", "network": "n", "url": f"http://{name}:1"})
        for name in ("a", "b", "c")
    ]
    pool = ProviderPool(configs, cooldown_secs=10, clock=lambda: now[0])
    picks = [pool._pick({})[0].client.name for _ in range(4)]
    assert picks == ["a", "b", "c", "a"]
    pool._members[1].cooling_until = 10.0
    assert [pool._pick({})[0].client.name for _ in range(3)] == ["c", "a", "c"]
    assert pool.cooling_down() == ["b"]
    for m in pool._members:
        m.cooling_until = 10.0 + len(m.client.name) + ord(m.client.name)
    member, cooling = pool._pick({})
    assert cooling and member.client.name == "a"  # back soonest
    assert pool._pick({"a": None, "b": None, "c": None}) == (None, False)
    now[0] = 200.0
    assert pool.cooling_down() == []
