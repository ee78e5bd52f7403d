"""Fetching and converting blocks in worker processes, to use more than one core.

Python runs one thread at a time, and fetching plus converting is most of an extractor's
CPU. `ProcessPoolSource` hands each chunk of block numbers to one of its worker processes,
in turn. A worker runs one event loop with its own provider pool: it starts fetching a
chunk as soon as the request arrives, and converts the chunks whose blocks have come back,
in order. So while it converts one chunk, the requests for its next ones are already with
the node, and the node never waits for us. The record batches come back as Arrow IPC,
which costs little to move. Writing and committing stay in the calling process.

The provider limits are shared out: each of N workers may have `concurrent_request_limit`
/ N requests in flight and send `rate_limit_per_minute` / N requests a minute, so all of
them together stay within what the provider file allows (and there are never more
workers than the smallest `concurrent_request_limit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa

from ampd.extract.engine import Chunk
from ampd.logs import get_logger, setup_logging
from ampd.providers.config import ProviderConfig
from ampd.providers.evm_rpc.convert import BlockHeader, ConversionError, block_headers, convert
from ampd.providers.evm_rpc.errors import RpcError
from ampd.providers.evm_rpc.transport import decode_on_loop_thread

log = get_logger("extract")

_SHUTDOWN = b""
_EXIT_TIMEOUT = 10.0


class RemoteConversionError(ConversionError):
    """A ConversionError raised in a worker process (message kept, fields not)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.block_num, self.table, self.column, self.value, self.reason = (
            None,
            "",
            "",
            None,
            message,
        )


class RemoteRpcError(RpcError):
    """An RpcError raised in a worker process (message kept, fields not)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.provider, self.url, self.detail, self.method = "", "", message, None


class WorkerProcessError(RuntimeError):
    """A worker process failed: it died, or an unexpected error ended a chunk."""


def worker_count(providers: Sequence[ProviderConfig], processes: int) -> int:
    """How many of `processes` workers to run: each needs one request in flight at least,
    so never more than the smallest `concurrent_request_limit`."""
    return max(1, min([processes, *(p.concurrent_request_limit for p in providers)]))


def share_limits(providers: Sequence[ProviderConfig], processes: int) -> list[dict[str, Any]]:
    """Each provider's file, as written, with its limits divided among `processes` workers."""
    shared = []
    for p in providers:
        raw = dict(p.raw)
        raw["concurrent_request_limit"] = max(1, p.concurrent_request_limit // processes)
        if p.rate_limit_per_minute:
            raw["rate_limit_per_minute"] = max(1, p.rate_limit_per_minute // processes)
        shared.append(raw)
    return shared


# Objects the cyclic garbage collector may see pile up before it runs (Python's default: 700).
_GC_THRESHOLD = 100_000


def relax_gc() -> None:
    """Run the cyclic garbage collector only when garbage can have piled up.

    Decoding one chunk's JSON makes tens of thousands of dicts and lists, all alive until
    the chunk is converted. With Python's default threshold the collector runs dozens of
    times per chunk and frees nothing: 0.33 CPU-seconds per worker on 20,000 anvil blocks.
    The count that triggers a collection is objects made minus objects freed, so with a
    high threshold it still runs once that many objects outlive their chunk (cycles).
    Objects from before (imported modules) are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 10, 10)


# -- the worker process --------------------------------------------------------------------


def _worker_main(
    conn: Connection,
    providers: list[tuple[str, dict]],
    max_attempts: int | None,
    inherited: list[int],
) -> None:
    # A forked worker holds copies of the parent's ends of every pipe made so far: close
    # them, so that a pipe reads EOF (and a write fails) once the parent is gone.
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    # The parent decides when to stop (a terminal's Ctrl-C reaches the whole group): a
    # worker ends on its shutdown message, or when the parent's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging()  # a spawned process starts blank: same format and level (AMP_LOG)
    relax_gc()
    decode_on_loop_thread()
    try:
        asyncio.run(_serve(conn, providers, max_attempts))
    finally:
        conn.close()


async def _serve(
    conn: Connection, providers: list[tuple[str, dict]], max_attempts: int | None
) -> None:
    from ampd.providers.config import parse_provider
    from ampd.providers.evm_rpc.pool import ProviderPool

    loop = asyncio.get_running_loop()
    # Fetches in the order their requests came, each already running; None: stop.
    fetches: asyncio.Queue[tuple[int, asyncio.Task] | None] = asyncio.Queue()
    running: dict[int, asyncio.Task] = {}
    stopping = False
    configs = [parse_provider(name, raw) for name, raw in providers]
    async with ProviderPool(configs, max_attempts=max_attempts) as pool:

        def on_request() -> None:
            nonlocal stopping
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                message = _SHUTDOWN
            if message != _SHUTDOWN:
                seq, numbers = pickle.loads(message)
                running[seq] = task = loop.create_task(pool.fetch_blocks(numbers))
                task.add_done_callback(lambda _: running.pop(seq, None))
                fetches.put_nowait((seq, task))
                return
            # The parent stopped reading: drop the work in hand.
            stopping = True
            loop.remove_reader(conn.fileno())
            for task in list(running.values()):
                task.cancel()
            fetches.put_nowait(None)

        loop.add_reader(conn.fileno(), on_request)
        try:
            while (item := await fetches.get()) is not None:
                result = await _chunk_result(*item)
                if stopping:
                    break
                conn.send_bytes(pickle.dumps(result))
        except OSError:  # the parent closed its end
            pass
        finally:
            if not stopping:
                loop.remove_reader(conn.fileno())
            for task in list(running.values()):
                task.cancel()


async def _chunk_result(seq: int, fetch: asyncio.Task) -> tuple:
    try:
        try:
            raw = await fetch
        except asyncio.CancelledError:
            if fetch.cancelled():  # we dropped it (shutting down); not this coroutine's cancel
                return ("cancelled", seq)
            raise
        # Let requests that arrived meanwhile go out before this process is busy converting.
        await asyncio.sleep(0)
        batches = convert(raw)
        headers = [(h.number, h.hash, h.parent_hash, h.timestamp) for h in block_headers(raw)]
    except RpcError as exc:  # its own fields do not survive pickling
        return ("rpc_error", seq, str(exc))
    except ConversionError as exc:
        return ("conversion_error", seq, str(exc))
    except Exception:  # noqa: BLE001 - sent to the parent, which raises it
        return ("error", seq, traceback.format_exc())
    payload = {}
    for table, batch in batches.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        payload[table] = sink.getvalue().to_pybytes()
    return ("ok", seq, payload, headers)


# -- the calling process -------------------------------------------------------------------


class _Worker:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pending: dict[int, asyncio.Future] = {}
        self.reading = False


class ProcessPoolSource:
    """A ChunkSource running fetch and conversion in `processes` worker processes."""

    def __init__(
        self,
        providers: Sequence[ProviderConfig],
        processes: int | None = None,
        *,
        max_attempts: int | None = None,
        start_method: str = "spawn",
    ) -> None:
        self.processes = worker_count(providers, processes or os.cpu_count() or 1)
        # As written (placeholders kept): each worker substitutes ${VAR} from its environment.
        names = [p.name for p in providers]
        self._providers = list(zip(names, share_limits(providers, self.processes), strict=True))
        self.max_attempts = max_attempts
        # spawn by default: a process with threads and an event loop must not fork. A
        # caller that has neither yet may choose fork, which starts workers in
        # milliseconds instead of re-importing everything (see `start`).
        self._context = multiprocessing.get_context(start_method)
        self._workers: list[_Worker] = []
        self._seq = itertools.count()
        self._turn = itertools.cycle(range(self.processes))
        self._closed = False

    def start(self) -> None:
        """Start the worker processes now; call before any thread or event loop exists
        when the pool forks."""
        if self._workers:
            return
        forks = self._context.get_start_method() == "fork"
        for _ in range(self.processes):
            ours, theirs = self._context.Pipe()
            ours_fds = [w.conn.fileno() for w in self._workers] + [ours.fileno()]
            process = self._context.Process(
                target=_worker_main,
                args=(theirs, self._providers, self.max_attempts, ours_fds if forks else []),
                daemon=True,
                name="ampd-dump-worker",
            )
            process.start()
            theirs.close()  # so that our end reads EOF when the worker dies
            self._workers.append(_Worker(process, ours))

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (empty before `start`)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    @property
    def exit_codes(self) -> list[int | None]:
        return [w.process.exitcode for w in self._workers]

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        if self._closed:
            raise WorkerProcessError("the worker processes are shut down")
        self.start()
        loop = asyncio.get_running_loop()
        worker = self._workers[next(self._turn)]
        if not worker.reading:
            loop.add_reader(worker.conn.fileno(), self._on_result, worker)
            worker.reading = True
        seq = next(self._seq)
        future = loop.create_future()
        worker.pending[seq] = future
        try:
            worker.conn.send_bytes(pickle.dumps((seq, list(numbers))))
        except OSError as exc:
            worker.pending.pop(seq, None)
            raise self._died(worker) from exc
        try:
            payload, headers = await future
        finally:
            worker.pending.pop(seq, None)  # a cancelled chunk's answer is dropped on arrival
        batches = {table: _read(buffer) for table, buffer in payload.items()}
        return Chunk(batches, [BlockHeader(*h) for h in headers])

    def _on_result(self, worker: _Worker) -> None:
        try:
            message = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            worker.reading = False
            error = self._died(worker)
            for future in worker.pending.values():
                if not future.done():
                    future.set_exception(error)
            return
        kind, seq, *rest = message
        future = worker.pending.get(seq)
        if future is None or future.done():
            return
        if kind == "ok":
            future.set_result((rest[0], rest[1]))
        elif kind == "rpc_error":
            future.set_exception(RemoteRpcError(rest[0]))
        elif kind == "conversion_error":
            future.set_exception(RemoteConversionError(rest[0]))
        else:
            future.set_exception(WorkerProcessError(f"a dump worker failed:\n{rest[0]}"))

    def _died(self, worker: _Worker) -> WorkerProcessError:
        worker.process.join(timeout=1.0)
        return WorkerProcessError(
            f"dump worker process {worker.process.pid} exited (code {worker.process.exitcode})"
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            if worker.reading:
                loop.remove_reader(worker.conn.fileno())
                worker.reading = False
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(_SHUTDOWN)
            # Closed at once: a worker still sending a result gets an error, not a wait.
            worker.conn.close()
            for future in worker.pending.values():
                if not future.done():
                    future.set_exception(WorkerProcessError("the worker processes are shut down"))
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for worker in self._workers:
            worker.process.join(timeout=_EXIT_TIMEOUT)
            if worker.process.is_alive():
                log.warning("dump worker %d did not exit; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.join()

    async def __aenter__(self) -> ProcessPoolSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _read(buffer: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(buffer).read_next_batch()
