"""The JSON-RPC client of one EVM provider: calls, batches, the chain head, and whole blocks.

Every call goes through the same path: grouped into batches of `rpc_batch_size`, each
request waits for a slot (`concurrent_request_limit`) and a token (`rate_limit_per_minute`),
runs under `timeout_secs`, and its answer is checked call by call. Calls that failed
transiently are retried, alone, after an exponential backoff with jitter; a provider that
refuses the request (HTTP 4xx) fails at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ampd.providers.config import ProviderConfig
from ampd.providers.evm_rpc.blocks import RawBlock, block_problem, match_receipts
from ampd.providers.evm_rpc.errors import (
    BlockNotFoundError,
    ProviderRejectedError,
    RetriesExhaustedError,
    TransportFailure,
)
from ampd.providers.evm_rpc.limits import RateLimiter, backoff_delay
from ampd.providers.evm_rpc.pool import ProviderPool
from ampd.providers.evm_rpc.transport import HttpTransport, Transport, open_transport

__all__ = ["EvmRpcClient", "ProviderPool", "RawBlock"]

log = logging.getLogger("ampd.providers.evm_rpc")

Call = tuple[str, list[Any]]
# Judges one call's result: None when usable, else why it must be fetched again.
ResultCheck = Callable[[int, Any], str | None]


class _Failed:
    """A call that got no usable result this time (`error`: the JSON-RPC error object, when
    the node answered with one)."""

    __slots__ = ("reason", "status", "retryable", "error")

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        retryable: bool = True,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.error = error


@dataclass(frozen=True)
class CallError:
    """A JSON-RPC error the caller asked to have as an answer (`call_each`): a reverted
    eth_call is one. `data` is the error's `data` member as the node sent it."""

    code: Any
    message: str
    data: Any = None


@dataclass(frozen=True)
class CallFailed:
    """A call of `call_each` that got no answer in its attempts."""

    reason: str


class EvmRpcClient:
    """A client for one provider. Use `async with`, or call `aclose()` when done.

    `max_attempts` bounds the attempts per call (None: retry transient faults forever).
    """

    def __init__(
        self,
        config: ProviderConfig,
        *,
        max_attempts: int | None = None,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be None or >= 1")
        config = config.resolved()
        self.config = config
        self.name = config.name
        self.url = config.display_url  # as written in the file: safe to log
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._batch_size = max(1, config.rpc_batch_size)
        self._limit = config.concurrent_request_limit
        self._timeout = config.timeout_secs
        self._slots = asyncio.Semaphore(self._limit)
        self._rate = (
            RateLimiter(config.rate_limit_per_minute) if config.rate_limit_per_minute else None
        )
        self._transport: Transport = open_transport(
            config.url,
            _auth_headers(config),
            max_connections=self._limit,
            timeout=self._timeout,
        )
        self._ids = itertools.count(1)
        self._known_head = -1
        self._head_request: asyncio.Future[int] | None = None
        # Why this provider's answers are not parsed into Arrow (chunks.py), once they
        # turned out not to fit; None while they do.
        self.arrow_declined: str | None = None

    async def __aenter__(self) -> EvmRpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    @property
    def known_head(self) -> int:
        """The highest head this client has seen (-1 before the first `head()`)."""
        return self._known_head

    # --- the API ---

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; returns its result.

        Raises ProviderRejectedError (4xx) or RetriesExhaustedError (max_attempts reached).
        """
        return (await self._execute([(method, list(params))]))[0]

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Many calls, sent in batches of `rpc_batch_size`; results in call order."""
        return await self._execute([(method, list(params)) for method, params in calls])

    async def call_each(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        answers: Callable[[dict[str, Any]], bool],
    ) -> list[Any]:
        """Like `batch`, but each call stands alone: a JSON-RPC error for which `answers`
        is true is that call's answer (a CallError), and a call still failing after
        `max_attempts` is a CallFailed; the others' results are kept. Raises
        ProviderRejectedError when the provider refuses the requests (4xx)."""
        return await self._execute(
            [(method, list(params)) for method, params in calls], answers=answers, partial=True
        )

    async def head(self, finalized: bool = False) -> int:
        """The number of the `latest` (or `finalized`) block."""
        tag = "finalized" if finalized else "latest"

        def check(_: int, block: Any) -> str | None:
            if block is None:
                return f"no '{tag}' block"
            try:
                int(block["number"], 16)
            except (TypeError, KeyError, ValueError):
                return f"the '{tag}' block has no valid 'number'"
            return None

        block = (await self._execute([("eth_getBlockByNumber", [tag, False])], check))[0]
        number = int(block["number"], 16)
        self._known_head = max(self._known_head, number)
        return number

    async def shared_head(self) -> int:
        """`head()`, with concurrent callers sharing one request in flight."""
        if self._head_request is None or self._head_request.done():
            self._head_request = asyncio.ensure_future(self.head())
        return await asyncio.shield(self._head_request)

    async def fetch_blocks(self, numbers: Sequence[int]) -> list[RawBlock]:
        """Blocks with their receipts, in the order given.

        Receipts are checked against each block's transactions; a block whose receipts do
        not match is fetched again, whole. Raises BlockNotFoundError for a block above the
        provider's head, ProviderRejectedError, or RetriesExhaustedError.
        """
        wanted = list(dict.fromkeys(numbers))
        if not wanted:
            return []
        if max(wanted) > self._known_head:
            await self.shared_head()
        done: dict[int, RawBlock] = {}
        todo = wanted
        for attempt in itertools.count(1):
            mismatched = await self._fetch_round(todo, done)
            if not mismatched:
                return [done[n] for n in numbers]
            reason = mismatched[0][1]
            if self.max_attempts is not None and attempt >= self.max_attempts:
                raise RetriesExhaustedError(self.name, self.url, reason, attempt)
            delay = self._backoff(attempt)
            log.warning(
                "provider '%s': receipts do not match %d block(s), fetching them again in "
                "%.2fs (attempt %d): %s",
                self.name,
                len(mismatched),
                delay,
                attempt + 1,
                reason,
            )
            await asyncio.sleep(delay)
            todo = [n for n, _ in mismatched]
        raise AssertionError("unreachable")

    # --- blocks ---

    async def _fetch_round(
        self, todo: list[int], done: dict[int, RawBlock]
    ) -> list[tuple[int, str]]:
        """Fetch `todo` into `done`; return the blocks whose receipts did not match, and why."""
        beyond_head: set[int] = set()

        def check(i: int, block: Any) -> str | None:
            number = todo[i]
            if block is None:
                if number <= self._known_head:
                    return f"block {number} not found at or below the head {self._known_head}"
                beyond_head.add(number)
                return None
            return block_problem(number, block)

        # Blocks known to exist: ask for each block and its receipts side by side, so one
        # round trip brings both (and the node works on them together).
        side_by_side = not self.config.fetch_receipts_per_tx and max(todo) <= self._known_head
        if side_by_side:
            calls: list[Call] = []
            for n in todo:
                calls.append(("eth_getBlockByNumber", [hex(n), True]))
                calls.append(("eth_getBlockReceipts", [hex(n)]))
            results = await self._execute(
                calls, lambda i, result: None if i % 2 else check(i // 2, result)
            )
        else:
            calls = [("eth_getBlockByNumber", [hex(n), True]) for n in todo]
            results = await self._execute(calls, check)
        if beyond_head:
            raise BlockNotFoundError(self.name, self.url, min(beyond_head), self._known_head)
        if side_by_side:
            blocks, receipts = results[0::2], results[1::2]
            with_txs = list(zip(todo, blocks, strict=True))
        else:
            with_txs = [(n, b) for n, b in zip(todo, results, strict=True) if b["transactions"]]
            for n, b in zip(todo, results, strict=True):
                if not b["transactions"]:
                    done[n] = RawBlock(n, b, [])
            receipts = await self._receipts(with_txs)
        mismatched = []
        for (n, b), found in zip(with_txs, receipts, strict=True):
            ordered, problem = match_receipts(b, found)
            if problem:
                mismatched.append((n, problem))
            else:
                done[n] = RawBlock(n, b, ordered)
        return mismatched

    async def _receipts(self, blocks: list[tuple[int, dict[str, Any]]]) -> list[Any]:
        """Each block's receipts as the provider returned them (None where one is missing)."""
        if not blocks:
            return []
        if not self.config.fetch_receipts_per_tx:
            return await self._execute([("eth_getBlockReceipts", [hex(n)]) for n, _ in blocks])
        calls: list[Call] = [
            ("eth_getTransactionReceipt", [tx["hash"]])
            for _, b in blocks
            for tx in b["transactions"]
        ]
        flat = iter(await self._execute(calls))
        per_block = []
        for _, b in blocks:
            receipts = [next(flat) for _ in b["transactions"]]
            per_block.append(None if any(r is None for r in receipts) else receipts)
        return per_block

    # --- calls, batches and retries ---

    async def _execute(
        self,
        calls: list[Call],
        check: ResultCheck | None = None,
        *,
        answers: Callable[[dict[str, Any]], bool] | None = None,
        partial: bool = False,
    ) -> list[Any]:
        """Results of `calls` in order, retrying the failed ones until all succeed (with
        `partial`, until `max_attempts`: the calls still failing then are CallFailed). A
        JSON-RPC error for which `answers` is true is a result (CallError)."""
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in itertools.count(1):
            outcomes = await self._send_all(pending, calls)
            failed: list[tuple[int, str]] = []
            for i, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, _Failed):
                    if not outcome.retryable:
                        raise ProviderRejectedError(
                            self.name, self.url, outcome.reason, outcome.status or 0, calls[i][0]
                        )
                    error = outcome.error
                    if answers is not None and error is not None and answers(error):
                        message = error.get("message")
                        results[i] = CallError(
                            error.get("code"), "" if message is None else str(message),
                            error.get("data"),
                        )  # fmt: skip
                        continue
                    failed.append((i, outcome.reason))
                    continue
                problem = check(i, outcome) if check else None
                if problem:
                    failed.append((i, problem))
                else:
                    results[i] = outcome
            if not failed:
                return results
            first_method, reason = calls[failed[0][0]][0], failed[0][1]
            if self.max_attempts is not None and attempt >= self.max_attempts:
                if partial:
                    for i, why in failed:
                        results[i] = CallFailed(why)
                    return results
                raise RetriesExhaustedError(self.name, self.url, reason, attempt, first_method)
            delay = self._backoff(attempt)
            self._log_retry(failed, calls, len(pending), delay, attempt + 1)
            await asyncio.sleep(delay)
            pending = [i for i, _ in failed]
        raise AssertionError("unreachable")

    async def _send_all(self, indices: list[int], calls: list[Call]) -> list[Any]:
        """Send the calls at `indices` in groups, concurrently; an outcome for each, in order."""
        groups = [
            indices[k : k + self._batch_size] for k in range(0, len(indices), self._batch_size)
        ]
        outcomes: dict[int, Any] = {}
        queue = iter(groups)
        stop = False

        async def worker() -> None:
            nonlocal stop
            for group in queue:
                if stop:
                    return
                for i, outcome in zip(group, await self._send(group, calls), strict=True):
                    outcomes[i] = outcome
                    if isinstance(outcome, _Failed) and not outcome.retryable:
                        stop = True  # a refused request: no point sending the rest

        workers = min(len(groups), self._limit)
        if workers == 1:
            await worker()
        else:
            async with asyncio.TaskGroup() as tg:
                for _ in range(workers):
                    tg.create_task(worker())
        refused = next(
            (o for o in outcomes.values() if isinstance(o, _Failed) and not o.retryable), None
        )
        return [outcomes.get(i, refused) for i in indices]

    async def _send(self, group: list[int], calls: list[Call]) -> list[Any]:
        """One request carrying the calls of `group` (a batch array if more than one)."""
        ids = [next(self._ids) for _ in group]
        messages = [
            {"jsonrpc": "2.0", "id": id_, "method": calls[i][0], "params": calls[i][1]}
            for id_, i in zip(ids, group, strict=True)
        ]
        payload: Any = messages if len(messages) > 1 else messages[0]
        body = orjson.dumps(payload)
        async with self._slots:
            if self._rate is not None:
                await self._rate.acquire()
            try:
                async with asyncio.timeout(self._timeout):
                    answer = await self._transport.request(body, ids)
            except TimeoutError:
                return [_Failed(f"timed out after {self._timeout:g}s")] * len(group)
            except TransportFailure as e:
                return [_Failed(e.reason, e.status, e.retryable)] * len(group)
        if len(messages) == 1:
            return [_result(answer, ids[0])]
        return _batch_results(answer, ids)

    # --- raw requests, for answers parsed elsewhere (column_fetch.py) ---

    @property
    def sends_bytes(self) -> bool:
        """Whether `post_bytes` can be used: an HTTP(S) provider."""
        return isinstance(self._transport, HttpTransport)

    def new_ids(self, count: int) -> list[int]:
        return [next(self._ids) for _ in range(count)]

    @property
    def batch_size(self) -> int:
        return self._batch_size

    async def post_bytes(self, body: bytes) -> bytes | str:
        """One request within this provider's limits; the answer's bytes, or why there is
        none (a failure the caller does not retry: it takes the general path)."""
        async with self._slots:
            if self._rate is not None:
                await self._rate.acquire()
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._transport.request_bytes(body)  # type: ignore[attr-defined]
            except TimeoutError:
                return f"timed out after {self._timeout:g}s"
            except TransportFailure as e:
                return e.reason

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap)

    def _log_retry(
        self,
        failed: list[tuple[int, str]],
        calls: list[Call],
        sent: int,
        delay: float,
        attempt: int,
    ) -> None:
        methods = Counter(calls[i][0] for i, _ in failed)
        reasons = list(dict.fromkeys(reason for _, reason in failed))
        shown = "; ".join(reasons[:3]) + (
            f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        )
        log.warning(
            "provider '%s' (%s): %d of %d calls failed (%s), retrying in %.2fs (attempt %d): %s",
            self.name,
            self.url,
            len(failed),
            sent,
            ", ".join(f"{m} x{n}" for m, n in methods.items()),
            delay,
            attempt,
            shown,
        )


def _auth_headers(config: ProviderConfig) -> dict[str, str]:
    if not config.auth_token:
        return {}
    if config.auth_header:
        return {config.auth_header: config.auth_token}
    return {"Authorization": f"Bearer {config.auth_token}"}


def _result(answer: Any, id_: int) -> Any:
    """The result in a single call's answer, or a _Failed saying what is wrong with it."""
    if not isinstance(answer, dict):
        return _Failed(f"expected a JSON-RPC answer object, got {type(answer).__name__}")
    if answer.get("id") != id_:
        return _Failed(f"the answer's id {answer.get('id')!r} is not the request's id {id_}")
    error = answer.get("error")
    if error is not None:
        if isinstance(error, dict):
            return _Failed(
                f"JSON-RPC error {error.get('code')}: {error.get('message')}", error=error
            )
        return _Failed(f"JSON-RPC error: {error!r}")
    if "result" not in answer:
        return _Failed("the answer has neither 'result' nor 'error'")
    return answer["result"]


def _batch_results(answer: Any, ids: list[int]) -> list[Any]:
    """Match a batch answer to its calls by id: missing, duplicate or unknown ids are faults."""
    if isinstance(answer, dict):
        # Some nodes answer a whole batch with one error object.
        failed = _result(answer, answer.get("id"))  # type: ignore[arg-type]
        reason = failed.reason if isinstance(failed, _Failed) else "a single object for a batch"
        return [_Failed(f"batch answered with one object: {reason}")] * len(ids)
    if not isinstance(answer, list):
        return [_Failed(f"expected a batch answer array, got {type(answer).__name__}")] * len(ids)
    by_id: dict[Any, Any] = {}
    seen = Counter()
    for member in answer:
        key = member.get("id") if isinstance(member, dict) else None
        seen[key] += 1
        by_id[key] = member
    unknown = set(seen) - set(ids)
    if unknown:
        shown = sorted(map(repr, unknown))[:3]
        return [_Failed(f"batch answer has unknown ids {', '.join(shown)}")] * len(ids)
    results = []
    for id_ in ids:
        if seen[id_] == 0:
            results.append(_Failed(f"call id {id_} is missing from the batch answer"))
        elif seen[id_] > 1:
            results.append(_Failed(f"call id {id_} is answered {seen[id_]} times in the batch"))
        else:
            results.append(_result(by_id[id_], id_))
    return results
