"""Run one command and measure it: wall time and peak memory of its whole process tree.

    python bench/measure.py --out RESULT.json --timeout SECONDS [--log LOG] -- CMD ARGS...

Meant to run as a fresh child of the harness, so that `getrusage(RUSAGE_CHILDREN)` here sees
only the measured command and its descendants: its `ru_maxrss` is the exact peak of the
largest single process among them. A poller also sums the resident memory of the live tree
(from /proc, every 20 ms), which catches tools that spread over several processes; the peak
reported is the larger of the two. The command runs in its own session so a timeout kills
all of it. The result is written as JSON to --out; the exit code is 0 whenever that worked.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_POLL_SECONDS = 0.02
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from each of its threads' /proc children list."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def tree_pids(root: int) -> list[int]:
    """`root` and all its live descendants. Walks down from `root` only (not all of /proc),
    so polling it costs the tool little CPU."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(_children(pid))
    return found


def tree_rss_kib(root: int) -> int:
    """Resident memory of `root` and all its descendants, in KiB (shared pages count twice)."""
    return sum(_rss_kib(pid) for pid in tree_pids(root))


def process_cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds of one process (0 once it is gone), from /proc/PID/stat;
    with `children`, those of its children that exited and were waited for too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of stat(5); 12-15 after the name.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root`'s whole process tree: every live process, and the children each
    has reaped (10 ms ticks)."""
    return sum(process_cpu_seconds(pid) for pid in tree_pids(root))


class _TreePoller(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.root))
            self._stop_event.wait(_POLL_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure(command: list[str], timeout: float, log: Path | None) -> dict:
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    poller = _TreePoller(proc.pid)
    poller.start()

    def _interrupted(signum: int, _frame: object) -> None:
        # The command is in its own session: take it down with us.
        os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wall = time.monotonic() - started
    poller.stop()
    # Descendants the command left behind (it should leave none) must not outlive the run.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if log is not None:
        out.close()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "command": command,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_seconds": wall,
        "max_process_rss_kib": usage.ru_maxrss,
        "tree_peak_rss_kib": poller.peak_kib,
        "peak_rss_kib": max(usage.ru_maxrss, poller.peak_kib),
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--log", type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    result = measure(command, args.timeout, args.log)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()


@contextmanager
def fresh_cluster(
    pg: Any, root: Path, node: Any, settings: dict, error: type[Exception], what: str,
    after: Callable[[], None] | None = None,
) -> Iterator[Any]:  # fmt: skip
    """The e2e harness's `Cluster` (tests/support/cluster.py, on the caller's sys.path) in a
    fresh `root`, on a fresh database of the managed PostgreSQL `pg`, extracting from `node`
    (only its `url` is used). Every process is stopped and the database dropped at the end,
    then `after` runs; a process that fails to start raises `error("<what>: ...")`."""
    from support.cluster import Cluster
    from support.postgres import create_database, drop_database

    shutil.rmtree(root, ignore_errors=True)
    db_url = create_database(pg)
    cluster = Cluster(root, db_url, node, settings)
    try:
        yield cluster
    except AssertionError as exc:  # how the e2e harness reports a process that failed
        raise error(f"{what}: {exc}") from None
    finally:
        cluster.stop_all()
        drop_database(pg, db_url)
        if after is not None:
            after()


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def last_json_line(path: Path) -> dict | None:
    """The JSON summary a process printed last (ampd dump, the floor), if any."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None
