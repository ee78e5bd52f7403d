"""The soak's processes: each controller and worker life, what we did to it, how it ended.

A service (`controller`, `w1`, ...) has one *life* per start. The fleet remembers which
signals the soak sent each life, and when a life ends it says whether that was expected
(we killed it, or it exited 0 after our SIGTERM) or an anomaly:
- crash: died by a signal we did not send (SIGSEGV, SIGABRT, ...), or exited non-zero
  (or by the SIGTERM itself) after our SIGTERM;
- hang: still running `shutdown_timeout_secs` + a margin after our SIGTERM (then kill -9);
- unexpected exit: exited while we had not signalled it (any exit code).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from support.procs import AMPD, Proc

# A process that has not taken SIGTERM by then is signalled anyway (and counted if it dies).
BOOT_BOUND_SECS = 1.0
READY = {
    "controller": re.compile(r"admin API listening on (http://\S+)"),
    "worker": re.compile(r"worker \S+ registered"),
}


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Life:
    service: str
    role: str  # controller | worker
    gen: int
    proc: Proc
    started: float = field(default_factory=time.monotonic)
    sent: list[str] = field(default_factory=list)  # KILL, TERM, STOP, CONT, in order
    frozen: bool = False
    term_at: float | None = None
    ready_at: float | None = None
    ended_at: float | None = None
    returncode: int | None = None
    outcome: str | None = None  # killed | stopped | crash | hang | unexpected_exit

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.proc.log_path

    @property
    def running(self) -> bool:
        return self.ended_at is None

    @property
    def untouched(self) -> bool:
        """Running and not signalled (a thawed life counts as untouched again)."""
        return self.running and not self.frozen and not ({"KILL", "TERM"} & set(self.sent))

    def is_ready(self) -> bool:
        if self.ready_at is None and READY[self.role].search(self.proc.log()):
            self.ready_at = time.monotonic()
        return self.ready_at is not None


@dataclass
class Anomaly:
    kind: str  # crash | hang | unexpected_exit
    service: str
    gen: int
    pid: int
    detail: str
    log: str  # the log path
    excerpt: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Fleet:
    """Starts, signals and watches one trial's controller and workers."""

    def __init__(
        self,
        config_path: Path,
        logs_dir: Path,
        shutdown_bound: float,
        env: dict[str, str] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config_path = config_path
        self.logs_dir = logs_dir
        self.shutdown_bound = shutdown_bound  # shutdown_timeout_secs + margin
        self.env = env or {}
        self.log = log
        self.lives: list[Life] = []
        self.anomalies: list[Anomaly] = []
        self.lock = threading.RLock()  # the PostgreSQL-restart thread reads lives too

    # -- lives --

    def current(self, service: str) -> Life | None:
        with self.lock:
            for life in reversed(self.lives):
                if life.service == service:
                    return life
        return None

    def running(self, role: str | None = None) -> list[Life]:
        with self.lock:
            return [x for x in self.lives if x.running and (role is None or x.role == role)]

    def start(self, service: str) -> Life:
        role = "controller" if service.startswith("controller") else "worker"
        with self.lock:
            previous = self.current(service)
            assert previous is None or not previous.running, f"{service} is running"
            gen = 1 + sum(1 for x in self.lives if x.service == service)
            argv = [AMPD, "--config", str(self.config_path), role]
            if role == "worker":
                argv += ["--node-id", service]
            proc = Proc(argv, self.logs_dir / f"{service}.{gen}.log", env=self.env)
            life = Life(service, role, gen, proc)
            self.lives.append(life)
        return life

    def wait_ready(self, life: Life, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if life.is_ready():
                return True
            if self.poll_one(life):
                return False
            time.sleep(0.05)
        return False

    # -- signals --

    def kill(self, life: Life) -> None:
        life.sent.append("KILL")
        _signal_group(life.pid, signal.SIGKILL)

    def freeze(self, life: Life) -> None:
        life.sent.append("STOP")
        life.frozen = True
        _signal_group(life.pid, signal.SIGSTOP)

    def thaw(self, life: Life) -> None:
        if life.frozen:
            life.sent.append("CONT")
            life.frozen = False
            _signal_group(life.pid, signal.SIGCONT)

    def term(self, life: Life) -> None:
        """SIGTERM, once the process has booted far enough to handle it (see `_catches`)."""
        deadline = time.monotonic() + BOOT_BOUND_SECS
        while not _catches(life.pid, signal.SIGTERM) and time.monotonic() < deadline:
            time.sleep(0.002)
        life.sent.append("TERM")
        life.term_at = time.monotonic()
        try:
            os.kill(life.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    # -- watching --

    def poll(self) -> list[Life]:
        """Classify lives that ended since the last call (and hangs); returns them."""
        ended = []
        with self.lock:
            for life in list(self.lives):
                if life.running and self.poll_one(life):
                    ended.append(life)
        return ended

    def poll_one(self, life: Life) -> bool:
        """True when `life` ended now (it is classified then)."""
        if not life.running:
            return False
        code = life.proc.popen.poll()
        now = time.monotonic()
        if code is None:
            if (
                life.term_at is not None
                and "KILL" not in life.sent
                and now - life.term_at > self.shutdown_bound
            ):
                self._anomaly(
                    life,
                    "hang",
                    f"still running {now - life.term_at:.1f} s after SIGTERM "
                    f"(bound {self.shutdown_bound:.0f} s); killed with SIGKILL",
                )
                life.outcome = "hang"
                self.kill(life)
            return False
        life.ended_at = now
        life.returncode = code
        if life.outcome == "hang":
            return True
        if "KILL" in life.sent:
            life.outcome = "killed"
        elif "TERM" in life.sent:
            took = now - (life.term_at or now)
            if code == 0:
                life.outcome = "stopped"
            else:
                life.outcome = "crash"
                self._anomaly(life, "crash", f"{_describe(code)} {took:.1f} s after SIGTERM")
        elif code < 0:
            life.outcome = "crash"
            self._anomaly(life, "crash", f"{_describe(code)}; the soak sent {life.sent or 'none'}")
        else:
            life.outcome = "unexpected_exit"
            age = now - life.started
            self._anomaly(
                life, "unexpected_exit", f"{_describe(code)} {age:.1f} s after start, unsignalled"
            )
        return True

    def _anomaly(self, life: Life, kind: str, detail: str) -> None:
        anomaly = Anomaly(
            kind, life.service, life.gen, life.pid, detail, str(life.log_path), tail(life.log_path)
        )
        self.anomalies.append(anomaly)
        self.log(f"    ANOMALY {kind}: {life.service} (life {life.gen}, pid {life.pid}): {detail}")

    # -- the end --

    def stop_all(self) -> None:
        """The quiet end: thaw, SIGTERM every live process, wait (bounded), classify."""
        with self.lock:
            for life in self.running():
                self.thaw(life)
            for life in self.running():
                if "TERM" not in life.sent and "KILL" not in life.sent:
                    self.term(life)
        deadline = time.monotonic() + self.shutdown_bound + 15
        while self.running() and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        for life in self.running():  # a kill -9 that did not take: give up on it
            self.kill(life)
            life.proc.popen.wait(10)
            self.poll_one(life)

    def kill_all(self) -> None:
        """For an interrupted run: nothing outlives the soak."""
        for life in self.lives:
            if life.proc.popen.poll() is None:
                _signal_group(life.pid, signal.SIGKILL)
                _signal_group(life.pid, signal.SIGCONT)
                try:
                    life.proc.popen.wait(10)
                except Exception:  # noqa: BLE001 - best effort
                    pass


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` (its SigCgt mask in /proc).

    Before that, in the tens of milliseconds the Python interpreter takes to boot, no
    program of it can handle a signal: `ampd` takes SIGTERM with the first lines it runs. A
    SIGTERM is sent once the handler is there (or after BOOT_BOUND_SECS regardless, so a
    process that never installs one is still caught out).
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        return True  # gone: let the kill report it
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group (each service leads its own session), else the process."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"died by {signal.Signals(-code).name}"
        except ValueError:
            return f"died by signal {-code}"
    return f"exited {code}"
