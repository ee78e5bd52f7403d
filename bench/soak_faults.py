"""The soak's fault scheduler: process faults at random moments, and PostgreSQL restarts
with a measurement of how soon each service's next database call succeeds.

Everything random comes from the trial's seeded `random.Random`: which fault, which
process, the gaps between faults, how long a freeze or an outage lasts, when a killed or
stopped process is started again. (The timing of the processes themselves is not seeded,
so a replay with the same seed makes the same choices, not the same interleavings.)
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psycopg
from soak_procs import Fleet, Life

from ampd.metadb.managed import ManagedPostgres

PROCESS_FAULTS = ("worker_kill", "worker_freeze", "worker_term", "controller_kill", "pg_restart")
WEIGHTS = {"worker_kill": 3.0, "worker_freeze": 2.0, "worker_term": 3.0, "controller_kill": 1.5}


@dataclass
class Timing:
    worker_timeout: float
    gap: tuple[float, float] = (0.8, 3.0)  # between two faults
    restart_after: tuple[float, float] = (0.3, 3.0)  # a killed or stopped process
    freeze_extra: tuple[float, float] = (1.0, 3.0)  # past worker_timeout_secs
    pg_down: tuple[float, float] = (0.0, 1.5)  # between the immediate stop and the start
    pg_restarts: tuple[int, int] = (1, 2)  # per trial
    pg_window: tuple[float, float] = (4.0, 40.0)  # seconds into the trial
    recovery_bound: float = 30.0  # give up measuring a service's recovery after this


@dataclass
class Recovery:
    """One PostgreSQL restart: downtime and each measured service's recovery in seconds
    (None: not recovered within the bound)."""

    at: float  # seconds into the trial
    down_secs: float
    services: dict[str, float | None] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # signalled meanwhile: not measured
    error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Scheduler:
    def __init__(
        self,
        rng: random.Random,
        fleet: Fleet,
        pg: ManagedPostgres,
        db_url: str,
        admin_url: str,
        workers: list[str],
        timing: Timing,
        log: Callable[[str], None] = print,
    ) -> None:
        self.rng = rng
        self.fleet = fleet
        self.pg = pg
        self.db_url = db_url
        self.admin_url = admin_url
        self.workers = workers
        self.timing = timing
        self.log = log
        self.began = time.monotonic()
        self.injected: Counter[str] = Counter()
        self.recoveries: list[Recovery] = []
        self.pg_thread: threading.Thread | None = None
        self._pending: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._next_fault = self.began + rng.uniform(*timing.gap)
        n = rng.randint(*timing.pg_restarts)
        lo, hi = timing.pg_window
        self._pg_plan = sorted(self.began + rng.uniform(lo, hi) for _ in range(n))
        self._quiet = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began

    @property
    def pg_busy(self) -> bool:
        return self.pg_thread is not None and self.pg_thread.is_alive()

    def later(self, delay: float, what: str, action: Callable[[], None]) -> None:
        heapq.heappush(self._pending, (time.monotonic() + delay, next(self._seq), what, action))

    # -- the loop's step --

    def tick(self) -> None:
        now = time.monotonic()
        for life in self.fleet.poll():
            self._ended(life)
        while self._pending and self._pending[0][0] <= now:
            _, _, _, action = heapq.heappop(self._pending)
            action()
        if self._quiet or self.pg_busy:
            return
        if self._pg_plan and now >= self._pg_plan[0]:
            self._pg_plan.pop(0)
            self._pg_restart()
            self._next_fault = max(self._next_fault, now + self.rng.uniform(*self.timing.gap))
            return
        if now >= self._next_fault:
            self._inject()
            self._next_fault = now + self.rng.uniform(*self.timing.gap)

    def _ended(self, life: Life) -> None:
        """A process ended (killed, stopped, or an anomaly): start it again a bit later,
        as a supervisor would."""
        if self._quiet:
            return
        self.later(
            self.rng.uniform(*self.timing.restart_after),
            f"restart {life.service}",
            lambda: self._restart(life.service),
        )

    def _restart(self, service: str) -> None:
        if self._quiet:
            return
        current = self.fleet.current(service)
        if current is not None and current.running:
            return
        self.fleet.start(service)

    # -- process faults --

    def _healthy_workers(self) -> list[Life]:
        return [x for x in self.fleet.running("worker") if x.untouched and x.is_ready()]

    def _inject(self) -> None:
        healthy = self._healthy_workers()
        choices: list[tuple[str, Life]] = []
        for life in self.fleet.running("worker"):
            others = [x for x in healthy if x is not life]
            if life.untouched and others:  # keep at least one worker up
                for kind in ("worker_kill", "worker_freeze", "worker_term"):
                    choices.append((kind, life))
        controller = self.fleet.current("controller")
        if controller is not None and controller.untouched:
            choices.append(("controller_kill", controller))
        if not choices:
            return
        weights = [WEIGHTS[kind] for kind, _ in choices]
        kind, life = self.rng.choices(choices, weights=weights)[0]
        self.injected[kind] += 1
        age = time.monotonic() - life.started
        if kind in ("worker_kill", "controller_kill"):
            self.log(
                f"    {self.elapsed:5.1f}s kill -9 {life.service} (life {life.gen}, {age:.1f} s old)"
            )
            self.fleet.kill(life)
        elif kind == "worker_freeze":
            secs = self.timing.worker_timeout + self.rng.uniform(*self.timing.freeze_extra)
            self.log(f"    {self.elapsed:5.1f}s SIGSTOP {life.service} for {secs:.1f} s")
            self.fleet.freeze(life)
            self.later(secs, f"SIGCONT {life.service}", lambda: self.fleet.thaw(life))
        else:
            self.log(
                f"    {self.elapsed:5.1f}s SIGTERM {life.service} (life {life.gen}, {age:.1f} s old)"
            )
            self.fleet.term(life)

    # -- PostgreSQL --

    def _pg_restart(self) -> None:
        self.injected["pg_restart"] += 1
        down = self.rng.uniform(*self.timing.pg_down)
        self.log(f"    {self.elapsed:5.1f}s PostgreSQL immediate restart ({down:.1f} s down)")
        record = Recovery(at=round(self.elapsed, 1), down_secs=round(down, 2))
        self.recoveries.append(record)
        self.pg_thread = threading.Thread(
            target=self._pg_restart_thread, args=(record, down), name="pg-restart", daemon=True
        )
        self.pg_thread.start()

    def _pg_restart_thread(self, record: Recovery, down: float) -> None:
        try:
            self.pg.kill()  # SIGQUIT: immediate shutdown
            time.sleep(down)
            self.pg.start()
            ready = time.time()
            measure_recovery(self, record, ready)
            shown = ", ".join(
                f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in record.services.items()
            )
            self.log(f"    PostgreSQL back; next successful database call: {shown} s")
        except Exception as exc:  # noqa: BLE001 - recorded, the soak goes on
            record.error = f"{type(exc).__name__}: {exc}"
            self.log(f"    PostgreSQL restart failed: {record.error}")

    # -- the end --

    def quiesce(self) -> None:
        """No more faults or restarts; wait for a PostgreSQL restart in progress; thaw."""
        self._quiet = True
        if self.pg_thread is not None:
            self.pg_thread.join(self.timing.recovery_bound + 90)
        self._pending.clear()
        for life in self.fleet.running():
            self.fleet.thaw(life)


def measure_recovery(sched: Scheduler, record: Recovery, ready: float) -> None:
    """For each service running untouched when PostgreSQL accepted connections again: the
    seconds until its next database call succeeded. The controller: GET /jobs answers 200.
    A worker: its heartbeat (`workers.heartbeat_at`, stamped by the server) passes `ready`."""
    fleet = sched.fleet
    with fleet.lock:
        measured = {x.service: x for x in fleet.running() if x.untouched and x.is_ready()}
        signals = {service: len(x.sent) for service, x in measured.items()}
    pending = dict(measured)
    deadline = ready + sched.timing.recovery_bound
    with httpx.Client(timeout=1.0) as http:
        conn: psycopg.Connection | None = None
        try:
            while pending and time.time() < deadline:
                for service, life in list(pending.items()):
                    if len(life.sent) > signals[service]:  # faulted meanwhile: not measured
                        record.skipped.append(service)
                        del pending[service]
                    elif not life.running:  # exited on its own: never recovered
                        record.services[service] = None
                        del pending[service]
                if "controller" in pending:
                    try:
                        if http.get(f"{sched.admin_url}/jobs").status_code == 200:
                            record.services["controller"] = round(time.time() - ready, 3)
                            del pending["controller"]
                    except httpx.HTTPError:
                        pass
                workers = [s for s in pending if s != "controller"]
                if workers:
                    try:
                        if conn is None:
                            conn = psycopg.connect(sched.db_url, autocommit=True, connect_timeout=2)
                        rows = conn.execute(
                            "SELECT node_id, extract(epoch FROM heartbeat_at)::float8 "
                            "FROM workers WHERE node_id = ANY(%s)",
                            (workers,),
                        ).fetchall()
                    except psycopg.Error:
                        if conn is not None:
                            conn.close()
                        conn = None
                        rows = []
                    for node, beat in rows:
                        if beat > ready:
                            record.services[node] = round(beat - ready, 3)
                            del pending[node]
                time.sleep(0.05)
        finally:
            if conn is not None:
                conn.close()
    for service in pending:
        record.services[service] = None
