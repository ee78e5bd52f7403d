"""Processes that fetch blocks from providers and convert them to Arrow, for any caller.

Python runs one thread at a time, and fetching plus converting is most of an extractor's
CPU. `FetchProcesses` is a fixed set of child processes that serve every provider set their
owner uses: `ampd dump` has one set for its one dataset; a worker has one for all its
segments, so that segments of one network share the provider's limits (see parallel.py).

A child runs one event loop with a provider pool per provider set it was told of, of the
set's kind (providers/kinds.py: the kind fetches and converts; this module knows none). It starts
fetching a chunk as soon as the request arrives and converts the chunks whose blocks have
come back, the one asked for first first: while it converts one chunk, the requests for its
next ones are already with the node, and a chunk that is slow to come back (its provider
retried) holds up no other. Record batches come back as Arrow IPC, which costs little to
move. Single calls (the head, one block's header) are answered as they finish. A request
its owner gives up on (a segment that moved, a stop) is cancelled in the child too, so that
its fetches do not take the provider's limits from the requests that are still wanted.

A child dies with its owner: it is killed by the kernel when the owner dies (Linux's
parent-death signal), and it stops when the owner's end of its pipe closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa

from ampd.extract.chunk import ConversionError, SourceError
from ampd.logs import get_logger, setup_logging
from ampd.providers.config import parse_provider
from ampd.providers.kinds import SourceKind, source_kind

log = get_logger("extract")

_SHUTDOWN = b""
_EXIT_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1
# glibc mallopt parameters, and the sizes this process keeps to itself (see keep_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_BYTES = 64 << 20


class RemoteConversionError(ConversionError):
    """A ConversionError raised in a fetch process (message kept, fields not)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.block_num, self.table, self.column, self.value, self.reason = (
            None,
            "",
            "",
            None,
            message,
        )


class RemoteSourceError(SourceError):
    """A provider's SourceError raised in a fetch process (message kept, fields not)."""


class WorkerProcessError(RuntimeError):
    """A fetch process failed: it died, or an unexpected error ended a request."""


# -- the child process ---------------------------------------------------------------------

# Objects the cyclic garbage collector may see pile up before it runs (Python's default: 700).
_GC_THRESHOLD = 100_000


def relax_gc() -> None:
    """Run the cyclic garbage collector only when garbage can have piled up.

    Decoding one chunk's JSON makes tens of thousands of dicts and lists, all alive until
    the chunk is converted. With Python's default threshold the collector runs dozens of
    times per chunk and frees nothing: 0.33 CPU-seconds per process on 20,000 anvil blocks.
    The count that triggers a collection is objects made minus objects freed, so with a
    high threshold it still runs once that many objects outlive their chunk (cycles).
    Objects from before (imported modules) are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 10, 10)


def keep_memory() -> None:
    """Keep freed memory for reuse instead of handing it back to the kernel at once.

    Every chunk allocates answers and documents of megabytes. By default glibc serves such
    sizes with fresh mappings and unmaps them when freed, so each chunk faults its pages
    in again: 390,000 page faults and 1.3 system CPU-seconds on 20,000 anvil blocks. Here
    allocations below 64 MiB come from the heap, and the heap's free top is returned only
    beyond 64 MiB.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _KEPT_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEPT_BYTES)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when `parent` (the thread that started it) dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(0)


def _child_main(conn: Connection, parent: int, inherited: list[int]) -> None:
    _die_with(parent)
    # A forked child holds copies of the parent's ends of every pipe made so far: close
    # them, so that a pipe reads EOF (and a write fails) once the parent is gone.
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    # The parent decides when to stop (a terminal's Ctrl-C reaches the whole group): a
    # child ends on its shutdown message, or when the parent's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging()  # a spawned process starts blank: same format and level (AMP_LOG)
    relax_gc()
    keep_memory()
    try:
        asyncio.run(_serve(conn))
    finally:
        conn.close()


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    pools: dict[str, tuple[SourceKind, Any]] = {}  # provider set -> its kind and pool
    work: dict[int, asyncio.Task] = {}  # every request in hand, by its number
    fetched: dict[int, tuple[SourceKind, asyncio.Task]] = {}  # chunk fetches that ended
    wake = asyncio.Event()  # a fetch ended, or the parent stopped
    stopping = False

    def on_fetched(seq: int, kind: SourceKind, task: asyncio.Task) -> None:
        if not task.cancelled():  # cancelled: the parent no longer waits for it
            fetched[seq] = (kind, task)
            wake.set()

    async def answer_call(seq: int, call: Any) -> None:
        conn.send_bytes(pickle.dumps(await _call_result(seq, call)))

    def start(seq: int, task: asyncio.Task) -> asyncio.Task:
        work[seq] = task
        task.add_done_callback(lambda _: work.pop(seq, None))
        return task

    def on_request() -> None:
        nonlocal stopping
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            message = _SHUTDOWN
        if message == _SHUTDOWN:  # the parent stopped reading: drop the work in hand
            stopping = True
            loop.remove_reader(conn.fileno())
            for task in list(work.values()):
                task.cancel()
            wake.set()
            return
        op, seq, key, *args = pickle.loads(message)
        if op == "cancel":  # the parent gave up on request `seq`: stop its work
            task = work.get(seq)
            if task is not None:
                task.cancel()
            return
        if op == "providers":
            kind_name, raw, max_attempts, finalized = args
            kind = source_kind(kind_name)
            kind.in_fetch_process()
            configs = [parse_provider(name, item) for name, item in raw]
            pools[key] = (kind, kind.open_pool(configs, max_attempts, finalized))
            return
        kind, pool = pools[key]
        if op == "blocks":
            task = start(seq, loop.create_task(kind.fetch(pool, args[0])))
            task.add_done_callback(lambda t: on_fetched(seq, kind, t))
        elif op == "head":
            start(seq, loop.create_task(answer_call(seq, kind.head(pool, args[0]))))
        elif op == "header":
            start(seq, loop.create_task(answer_call(seq, kind.header(pool, args[0]))))

    loop.add_reader(conn.fileno(), on_request)
    try:
        while not stopping:
            if not fetched:
                wake.clear()
                await wake.wait()
                continue
            # Of the chunks whose blocks are back, the one asked for first: one that is
            # slow to come back (a provider retried) does not hold up the others.
            seq = min(fetched)
            result = await _chunk_result(seq, *fetched.pop(seq))
            if stopping:
                break
            conn.send_bytes(pickle.dumps(result))
    except OSError:  # the parent closed its end
        pass
    finally:
        if not stopping:
            loop.remove_reader(conn.fileno())
        for task in list(work.values()):
            task.cancel()
        await asyncio.gather(*(pool.aclose() for _, pool in pools.values()), return_exceptions=True)


async def _call_result(seq: int, work: Any) -> tuple:
    try:
        return ("value", seq, await work)
    except SourceError as exc:  # its own fields do not survive pickling
        return ("source_error", seq, str(exc))
    except Exception:  # noqa: BLE001 - sent to the parent, which raises it
        return ("error", seq, traceback.format_exc())


async def _chunk_result(seq: int, kind: SourceKind, fetch: asyncio.Task) -> tuple:
    """The answer to chunk request `seq`, whose fetch has ended (not cancelled)."""
    try:
        raw = fetch.result()
        # Let requests that arrived meanwhile go out before this process is busy converting.
        await asyncio.sleep(0)
        batches, block_headers = kind.convert(raw)
        headers = [(h.number, h.hash, h.parent_hash, h.timestamp) for h in block_headers]
    except SourceError as exc:
        return ("source_error", seq, str(exc))
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
    return ("chunk", seq, payload, headers)


# -- the owning process --------------------------------------------------------------------


class _Child:
    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pending: dict[int, asyncio.Future] = {}
        self.keys: set[str] = set()  # provider sets it was told of
        self.reading = False


class FetchProcesses:
    """`count` child processes serving fetch requests for any provider set.

    spawn by default: a process with threads and an event loop must not fork. A caller
    with neither yet may choose fork, which starts children in milliseconds instead of
    re-importing everything (`start` then, before any thread exists). Start them from the
    thread that lives as long as they should: the kernel kills them when it ends.
    """

    def __init__(self, count: int, *, start_method: str = "spawn") -> None:
        if count < 1:
            raise ValueError(f"fetch processes: {count}; expected at least 1")
        self.count = count
        self._context = multiprocessing.get_context(start_method)
        self._children: list[_Child] = []
        self._seq = itertools.count()
        self.closed = False

    def start(self) -> None:
        if self._children or self.closed:
            return
        forks = self._context.get_start_method() == "fork"
        for _ in range(self.count):
            ours, theirs = self._context.Pipe()
            ours_fds = [c.conn.fileno() for c in self._children] + [ours.fileno()]
            process = self._context.Process(
                target=_child_main,
                args=(theirs, os.getpid(), ours_fds if forks else []),
                daemon=True,
                name="ampd-fetch",
            )
            process.start()
            theirs.close()  # so that our end reads EOF when the child dies
            self._children.append(_Child(process, ours))

    @property
    def pids(self) -> list[int]:
        """The children's process ids (empty before `start`)."""
        return [c.process.pid for c in self._children if c.process.pid is not None]

    @property
    def exit_codes(self) -> list[int | None]:
        return [c.process.exitcode for c in self._children]

    async def request(
        self,
        index: int,
        op: str,
        key: str,
        providers: tuple[str, list[tuple[str, dict]], int | None, bool],
        *args: Any,
    ) -> Any:
        """Run `op` ("blocks", "head" or "header") with `args` in child `index`, on the
        provider set `key` (`providers`: its kind, its files with limits already shared,
        max_attempts, and whether the dataset is finalized-only). Raises WorkerProcessError if the child dies or fails,
        RemoteSourceError and RemoteConversionError for what the providers or the
        conversion raised."""
        if self.closed:
            raise WorkerProcessError("the fetch processes are shut down")
        self.start()
        child = self._children[index]
        loop = asyncio.get_running_loop()
        if not child.reading:
            loop.add_reader(child.conn.fileno(), self._on_result, child)
            child.reading = True
        seq = next(self._seq)
        future = loop.create_future()
        child.pending[seq] = future
        try:
            if key not in child.keys:
                child.conn.send_bytes(pickle.dumps(("providers", None, key, *providers)))
                child.keys.add(key)
            child.conn.send_bytes(pickle.dumps((op, seq, key, *args)))
        except OSError as exc:
            child.pending.pop(seq, None)
            raise self._died(child) from exc
        try:
            return await future
        finally:
            child.pending.pop(seq, None)  # a cancelled request's answer is dropped on arrival
            if future.cancelled():  # given up (a segment moved): the child stops its work
                with contextlib.suppress(OSError):
                    child.conn.send_bytes(pickle.dumps(("cancel", seq, key)))

    def _on_result(self, child: _Child) -> None:
        try:
            message = pickle.loads(child.conn.recv_bytes())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(child.conn.fileno())
            child.reading = False
            error = self._died(child)
            for future in child.pending.values():
                if not future.done():
                    future.set_exception(error)
            return
        kind, seq, *rest = message
        future = child.pending.get(seq)
        if future is None or future.done():
            return
        if kind == "chunk":
            future.set_result((rest[0], rest[1]))
        elif kind == "value":
            future.set_result(rest[0])
        elif kind == "source_error":
            future.set_exception(RemoteSourceError(rest[0]))
        elif kind == "conversion_error":
            future.set_exception(RemoteConversionError(rest[0]))
        else:
            future.set_exception(WorkerProcessError(f"a fetch process failed:\n{rest[0]}"))

    def _died(self, child: _Child) -> WorkerProcessError:
        child.process.join(timeout=1.0)
        return WorkerProcessError(
            f"fetch process {child.process.pid} exited (code {child.process.exitcode})"
        )

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = asyncio.get_running_loop()
        for child in self._children:
            if child.reading:
                loop.remove_reader(child.conn.fileno())
                child.reading = False
            with contextlib.suppress(OSError):
                child.conn.send_bytes(_SHUTDOWN)
            # Closed at once: a child still sending a result gets an error, not a wait.
            child.conn.close()
            for future in child.pending.values():
                if not future.done():
                    future.set_exception(WorkerProcessError("the fetch processes are shut down"))
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for child in self._children:
            child.process.join(timeout=_EXIT_TIMEOUT)
            if child.process.is_alive():
                log.warning("fetch process %d did not exit; killing it", child.process.pid)
                child.process.kill()
                child.process.join()


def read_batches(payload: dict[str, bytes]) -> dict[str, pa.RecordBatch]:
    return {table: pa.ipc.open_stream(buf).read_next_batch() for table, buf in payload.items()}


def provider_key(
    kind: str, providers: Sequence[tuple[str, dict]], max_attempts: int | None, finalized: bool
) -> str:
    """One name per provider set (its kind, its files as shared out, the retry budget, and
    whether it serves a finalized-only dataset)."""
    text = json.dumps([kind, list(providers), max_attempts, finalized], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
