"""Start-up as real `ampd` processes: signals at any moment, and a database not up yet.

A SIGTERM or SIGINT at any moment after spawn (imports, config loading, waiting for the
database, migrations, pool open) exits 0; a second exits 1 at once. A service started
before its database waits for it (capped backoff, `metadata_db.connect_timeout_secs`) and
comes up once it does; past the bound it exits 1 with one `error:` line.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ampd.metadb.managed import ManagedPostgres
from support.procs import AMPD, Proc, kill_postgres_in, run

pytestmark = pytest.mark.timeout(240)

TIMEOUT_ENV = "AMP_CONFIG_METADATA_DB__CONNECT_TIMEOUT_SECS"
READY = {
    "controller": r"admin API listening on http://",
    "worker": r"worker w1 registered",
    "server": r"JSON Lines server listening on http://",
    "solo": r"ampd solo is up",
}
SOLO_ENV = {
    "AMP_CONFIG": "",
    "AMP_CONFIG_ADMIN_API_ADDR": "127.0.0.1:0",
    "AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0",
    "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0",
}
# Python itself takes ~10 ms to reach ampd's first line (much longer on a busy machine); no
# program can catch a signal before that, so the earliest moment waits for the handler,
# this long at most: the bound only keeps a start that never installs it from hanging.
HANDLER_WAIT_SECS = 10.0


def write_config(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "data_dir": "data",
        "providers_dir": "providers",
        "manifests_dir": "manifests",
        "admin_api_addr": "127.0.0.1:0",
        "jsonl_addr": "127.0.0.1:0",
        "flight_addr": "127.0.0.1:0",
        "shutdown_timeout_secs": 5,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[metadata_db]", f"url = {json.dumps(url)}", "pool_size = 4"]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def argv(command: str, config: Path | None, amp_dir: Path | None = None) -> list[str]:
    if command == "solo":
        return [AMPD, "solo", "--amp-dir", str(amp_dir)]
    extra = ["--node-id", "w1"] if command == "worker" else []
    return [AMPD, "--config", str(config), command, *extra]


def handles_signals(pid: int) -> bool:
    """Whether `ampd` runs in the process and has taken SIGINT and SIGTERM.

    Python catches SIGINT itself from its start (KeyboardInterrupt), and between fork and
    exec the process is a copy of this one, with its handlers: so the test is for `ampd`
    on the command line and a handler for SIGTERM, which ampd takes after SIGINT
    (runtime/process_signals.py). SigCgt in /proc/PID/status is the caught-signal mask."""
    if AMPD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
        return False
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def signal_at(proc: Proc, spawned: float, moment: float, sig: signal.Signals) -> None:
    time.sleep(max(0.0, spawned + moment - time.monotonic()))
    while not handles_signals(proc.pid) and time.monotonic() < spawned + HANDLER_WAIT_SECS:
        time.sleep(0.002)
    proc.signal(sig)


def postgres_alive_in(folder: Path) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                args
                and Path(args[0].decode()).name == "postgres"
                and str(folder).encode() in b" ".join(args)
            ):
                return True
    return False


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def amp_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "amp"
    yield folder
    kill_postgres_in(folder)


# -- a signal at any moment -----------------------------------------------------------------


@pytest.mark.parametrize("moment", [0.05, 0.3, 0.8, 1.5])
@pytest.mark.parametrize("command", ["controller", "worker", "server", "solo"])
def test_sigterm_at_any_moment_of_start_up_exits_0(
    command: str, moment: float, tmp_path: Path, db_url: str, amp_dir: Path, procs: list[Proc]
) -> None:
    config = None if command == "solo" else write_config(tmp_path, db_url)
    env = SOLO_ENV if command == "solo" else None
    proc = Proc(argv(command, config, amp_dir), tmp_path / "ampd.log", env=env)
    spawned = time.monotonic()
    procs.append(proc)
    signal_at(proc, spawned, moment, signal.SIGTERM)
    assert proc.wait(60) == 0, proc.log()
    assert "error:" not in proc.log()
    if command == "solo":
        assert not postgres_alive_in(amp_dir), "solo left its PostgreSQL running"


@pytest.mark.parametrize("command", ["controller", "worker"])
def test_sigint_early_exits_0(command: str, tmp_path: Path, db_url: str, procs: list[Proc]) -> None:
    proc = Proc(argv(command, write_config(tmp_path, db_url)), tmp_path / "ampd.log")
    spawned = time.monotonic()
    procs.append(proc)
    signal_at(proc, spawned, 0.3, signal.SIGINT)
    assert proc.wait(60) == 0, proc.log()


def test_second_signal_during_start_up_exits_1_at_once(
    tmp_path: Path, db_url: str, procs: list[Proc]
) -> None:
    proc = Proc(argv("worker", write_config(tmp_path, db_url)), tmp_path / "ampd.log")
    spawned = time.monotonic()
    procs.append(proc)
    signal_at(proc, spawned, 0.05, signal.SIGTERM)
    time.sleep(0.1)
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 1, proc.log()
    assert "again: exiting at once" in proc.log()


# -- a database that is not up yet ----------------------------------------------------------


def test_services_wait_for_a_database_that_starts_later(tmp_path: Path, procs: list[Proc]) -> None:
    cluster = ManagedPostgres(tmp_path / "pg")  # not started: its socket does not exist
    config = write_config(tmp_path / "cfg", cluster.url)
    try:
        started = {
            name: Proc(argv(name, config), tmp_path / f"{name}.log")
            for name in ("worker", "controller", "server")
        }
        procs.extend(started.values())
        for proc in started.values():
            proc.wait_for_log(r"waiting for the metadata database postgresql:///postgres\?host=")
        time.sleep(2.0)
        for proc in started.values():
            assert proc.popen.poll() is None, proc.log()
        cluster.start()
        for name, proc in started.items():
            proc.wait_for_log(READY[name], timeout=60)
            assert "metadata database postgresql:///postgres?host=" in proc.log()
            assert "is up (waited" in proc.log()
        for proc in started.values():
            proc.signal(signal.SIGTERM)
        for name, proc in started.items():
            assert proc.wait(30) == 0, f"{name}:\n{proc.log()}"
    finally:
        for proc in procs:
            proc.stop()
        cluster.stop()


@pytest.mark.parametrize("command", ["worker", "controller", "server", "migrate"])
def test_database_never_up_exits_1_with_one_clear_line_after_the_bound(
    command: str, tmp_path: Path
) -> None:
    url = "postgresql://ampd:s3cret@127.0.0.1:1/amp"  # port 1: connection refused
    config = write_config(tmp_path, url)
    began = time.monotonic()
    result = run(argv(command, config), env={TIMEOUT_ENV: "2"}, timeout=60)
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: metadata database postgresql://ampd@127.0.0.1:1/amp did not accept connections "
        "within 2s (metadata_db.connect_timeout_secs): connection failed: connection to server "
        'at "127.0.0.1", port 1 failed: Connection refused'
    ], result.stderr
    assert "s3cret" not in result.stderr
    assert 2.0 <= elapsed < 2.0 + 8.0
    assert "waiting for the metadata database postgresql://ampd@127.0.0.1:1/amp" in result.stderr


def test_a_wrong_database_name_fails_at_once(tmp_path: Path, pg_cluster: ManagedPostgres) -> None:
    url = f"postgresql:///no_such_db?host={pg_cluster.socket_dir}"
    result = run(argv("migrate", write_config(tmp_path, url)), timeout=60)  # bound: 60 s
    assert result.returncode == 1
    assert 'database "no_such_db" does not exist' in result.stderr
    assert "waiting for the metadata database" not in result.stderr


def test_sigterm_while_waiting_for_the_database_exits_0(tmp_path: Path, procs: list[Proc]) -> None:
    config = write_config(tmp_path, f"postgresql:///postgres?host={tmp_path / 'nothing'}")
    proc = Proc(argv("worker", config), tmp_path / "ampd.log")
    procs.append(proc)
    proc.wait_for_log(r"waiting for the metadata database")
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.log()
    assert "stopped during start-up" in proc.log()


def test_dump_stops_cleanly_on_a_signal_during_start_up(tmp_path: Path, procs: list[Proc]) -> None:
    manifest = tmp_path / "chain.json"
    manifest.write_text(json.dumps({"kind": "evm-rpc", "network": "anvil", "start_block": 0}))
    providers = tmp_path / "providers"
    providers.mkdir()
    # Never reached: the signal comes while the process is still importing.
    (providers / "p.toml").write_text(
        'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "http://127.0.0.1:1"\n'
    )
    command = [AMPD, "dump", "--manifest", str(manifest), "--providers-dir", str(providers)]
    command += ["--data-dir", str(tmp_path / "data"), "--start", "0", "--end", "9"]
    proc = Proc([*command, "--processes", "1"], tmp_path / "dump.log")
    spawned = time.monotonic()
    procs.append(proc)
    signal_at(proc, spawned, 0.05, signal.SIGTERM)
    assert proc.wait(60) == 0, proc.log()
    assert "dump stopped by a signal: no block written, 0..9 are not" in proc.log()


# -- the process -----------------------------------------------------------------------------


@pytest.mark.parametrize(("keep", "disabled"), [(None, "0"), ("keep", "1")])
def test_a_worker_runs_without_transparent_huge_pages(
    keep: str | None, disabled: str, tmp_path: Path, db_url: str, procs: list[Proc]
) -> None:
    """Off unless AMP_TRANSPARENT_HUGE_PAGES=keep (runtime/memory.py), as the kernel
    reports it in the process's status."""
    env = {"AMP_TRANSPARENT_HUGE_PAGES": keep} if keep else None
    proc = Proc(argv("worker", write_config(tmp_path, db_url)), tmp_path / "ampd.log", env=env)
    procs.append(proc)
    proc.wait_for_log(r"worker \S+ registered")
    status = Path(f"/proc/{proc.popen.pid}/status").read_text()
    assert f"THP_enabled:\t{disabled}" in status, status
