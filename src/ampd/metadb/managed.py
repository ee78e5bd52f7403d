"""Managed PostgreSQL: a private cluster in `<amp_dir>/metadb`, reachable only over a Unix socket.

Used by `ampd solo` when no `metadata_db.url` is configured, and by the test suite for its
throwaway clusters. The server binaries come from the machine: PATH, then
`pg_config --bindir`, then the usual install folders.

PostgreSQL refuses to run as root. When ampd runs as root, initdb and postgres run inside a
user namespace (`unshare --user`) where they see an ordinary uid, while the files stay owned
by the real user on disk.
"""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ampd.logs import get_logger

log = get_logger("metadb")

# Folders searched after PATH and pg_config; AMP_PG_SEARCH_PATHS (os.pathsep-separated
# glob patterns) replaces them, e.g. to point at a private build.
DEFAULT_SEARCH_PATTERNS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/usr/pgsql-*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
)
_SOCKET_PATH_MAX = 107  # sun_path, minus the terminating NUL
_NAMESPACE_UID = 1000  # the uid postgres sees inside the user namespace when we are root


class ManagedPostgresError(Exception):
    """The managed cluster could not be found, created, started or stopped."""


@dataclass(frozen=True)
class PostgresBinaries:
    initdb: Path
    postgres: Path


def find_binaries(env: dict[str, str] | None = None) -> PostgresBinaries:
    """Locate `initdb` and `postgres`; raise ManagedPostgresError saying what to install."""
    env = dict(os.environ if env is None else env)
    candidates: list[Path] = []
    for directory in env.get("PATH", "").split(os.pathsep):
        if directory:
            candidates.append(Path(directory))
    pg_config = shutil.which("pg_config", path=env.get("PATH", ""))
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(bindir))
        except (OSError, subprocess.SubprocessError):
            pass
    patterns = env.get("AMP_PG_SEARCH_PATHS")
    for pattern in patterns.split(os.pathsep) if patterns is not None else DEFAULT_SEARCH_PATTERNS:
        # Highest version first: /usr/lib/postgresql/17/bin before .../15/bin.
        found = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        candidates.extend(Path(p) for p in found)
    for directory in candidates:
        initdb, postgres = directory / "initdb", directory / "postgres"
        if _is_executable(initdb) and _is_executable(postgres):
            return PostgresBinaries(initdb=initdb, postgres=postgres)
    raise ManagedPostgresError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, via pg_config or in "
        "/usr/lib/postgresql/*/bin: install the PostgreSQL server (e.g. `apt-get install "
        "postgresql`) or set metadata_db.url to use an existing database"
    )


def _version_key(path: str) -> tuple[int, ...]:
    digits = [
        int(part) for part in path.replace("-", "/").replace("@", "/").split("/") if part.isdigit()
    ]
    return tuple(digits)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


class ManagedPostgres:
    """A PostgreSQL cluster owned by this process, living in `data_dir`.

    `start()` creates the cluster on first use, removes what a crashed run left behind,
    starts the server on a Unix socket inside `data_dir` and waits until it accepts
    connections. `stop()` shuts it down (SIGTERM, then harder after a bound).
    """

    def __init__(self, data_dir: Path, *, binaries: PostgresBinaries | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._binaries = binaries
        self._process: subprocess.Popen[bytes] | None = None
        self.user = getpass.getuser()

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    @property
    def url(self) -> str:
        return f"postgresql:///postgres?host={self.socket_dir}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60.0) -> str:
        """Start the server (creating the cluster if needed); returns its URL."""
        socket = self.socket_dir / ".s.PGSQL.5432"
        if len(str(socket)) > _SOCKET_PATH_MAX:
            raise ManagedPostgresError(
                f"the metadb folder path is too long for a Unix socket ({len(str(socket))} > "
                f"{_SOCKET_PATH_MAX} characters): {socket}; use a shorter --amp-dir"
            )
        binaries = self._binaries or find_binaries()
        self._binaries = binaries
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(binaries)
        self._clean_stale_server()
        self._launch(binaries)
        self._wait_ready(timeout)
        log.info("managed PostgreSQL ready (data in %s)", self.data_dir)
        return self.url

    def stop(self, timeout: float = 15.0, *, fast: bool = False) -> None:
        """Stop the server: SIGTERM (smart: waits for clients), then SIGINT (fast: disconnects
        them), then SIGKILL. With `fast`, start at SIGINT."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        steps = (
            (signal.SIGTERM, timeout / 3),
            (signal.SIGINT, timeout / 3),
            (signal.SIGKILL, timeout / 3),
        )[1 if fast else 0 :]
        for sig, wait in steps:
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                log.warning("managed PostgreSQL did not stop after %s; escalating", sig.name)
        log.info("managed PostgreSQL stopped")

    def kill(self) -> None:
        """Stop at once (used when a second signal asks for an immediate exit)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # SIGQUIT: immediate shutdown; children exit without writing anything more.
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()

    # -- internals --

    def _wrap(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        if not _is_executable(Path(unshare)):
            raise ManagedPostgresError(
                "PostgreSQL cannot run as root and `unshare` (util-linux) is missing: install "
                "util-linux, run ampd as an ordinary user, or set metadata_db.url"
            )
        return [
            unshare,
            "--user",
            f"--map-user={_NAMESPACE_UID}",
            f"--map-group={_NAMESPACE_UID}",
            *argv,
        ]

    def _initdb(self, binaries: PostgresBinaries) -> None:
        # A half-made cluster (initdb interrupted) has no PG_VERSION: start over.
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            log.warning("removing an incomplete cluster in %s", self.data_dir)
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log.info("creating the managed PostgreSQL cluster in %s", self.data_dir)
        argv = self._wrap(
            [
                str(binaries.initdb),
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.user,
                "--auth",
                "trust",
                "--locale",
                "C",
                "--encoding",
                "UTF8",
                "--no-instructions",
            ]
        )
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ManagedPostgresError(
                f"initdb failed in {self.data_dir}: {detail[-1] if detail else result.returncode}"
            )

    def _clean_stale_server(self) -> None:
        """Stop a server a crashed run left behind and remove its pid file."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            first_line = pid_file.read_text().splitlines()[0]
            pid = int(first_line.strip())
        except (FileNotFoundError, IndexError, ValueError):
            return
        if _is_postgres_of(pid, self.data_dir):
            log.warning("stopping a stale PostgreSQL server (pid %d) left by a previous run", pid)
            for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                if _wait_gone(pid, wait):
                    break
        pid_file.unlink(missing_ok=True)
        (self.socket_dir / ".s.PGSQL.5432.lock").unlink(missing_ok=True)

    def _launch(self, binaries: PostgresBinaries) -> None:
        argv = self._wrap(
            [
                str(binaries.postgres),
                "-D",
                str(self.data_dir),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "unix_socket_permissions=0700",
            ]
        )
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle, not its
            )
        finally:
            log_file.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ManagedPostgresError(
                    f"PostgreSQL exited with code {self._process.returncode} at start; "
                    f"last log line: {self._last_log_line()}"
                )
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.05)
        self.kill()
        raise ManagedPostgresError(
            f"PostgreSQL did not accept connections within {timeout:.0f}s: {last_error}; "
            f"see {self.log_path}"
        )

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"


def _is_postgres_of(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [part.decode(errors="replace") for part in cmdline]
    return (
        any(Path(arg).name in ("postgres", "postmaster") for arg in args[:1])
        and str(data_dir) in args
    )


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child of ours still answers kill(0); reap it if it is ours.
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False
