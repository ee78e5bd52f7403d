"""`ampctl` as a real process against a real `ampd solo` extracting from a real anvil."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ampd.datasets.manifest import generate_manifest
from support.anvil import Anvil, free_port
from support.procs import AMPD, BIN, Proc, kill_postgres_in, run

pytestmark = pytest.mark.timeout(300)

AMPCTL = str(BIN / "ampctl")
CHAIN_HEAD = 400  # anvil's genesis is block 0, so 400 mined blocks end at block 400
TABLES = ("blocks", "logs", "transactions")
SOLO_ENV = {
    "AMP_CONFIG": "",
    "AMP_CONFIG_ADMIN_API_ADDR": "127.0.0.1:0",
    "AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0",
    "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0",
    # Several segments for a few hundred blocks; a failing segment gives up after one retry.
    "AMP_CONFIG_SEGMENT_BLOCKS": "100",
    "AMP_CONFIG_MAX_RETRIES": "1",
}


@dataclass
class Solo:
    url: str
    amp_dir: Path
    proc: Proc


def start_solo(amp_dir: Path, log_name: str, extra_env: dict[str, str] | None = None) -> Solo:
    proc = Proc(
        [AMPD, "solo", "--amp-dir", str(amp_dir)],
        amp_dir.parent / log_name,
        env={**SOLO_ENV, **(extra_env or {})},
    )
    try:
        match = proc.wait_for_log(r"admin API listening on (http://[0-9.]+:\d+)")
        proc.wait_for_log(r"ampd solo is up")
    except BaseException:
        proc.stop()
        kill_postgres_in(amp_dir)
        raise
    return Solo(match.group(1), amp_dir, proc)


def ampctl(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    # No token unless a test gives one: the caller's environment must not leak into the test.
    base = {"AMP_AUTH_TOKEN": "", "AMP_ADMIN_URL": url or "", "COLUMNS": "200"}
    return run([AMPCTL, *args], env={**base, **(env or {})}, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stderr


class Ctl:
    """ampctl bound to one admin URL: `ok` (stdout), `json` (parsed --json), `fail` (stderr)."""

    def __init__(self, url: str, env: dict[str, str] | None = None) -> None:
        self.url = url
        self.env = env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return ampctl(*args, url=self.url, env=self.env, timeout=timeout)

    def ok(self, *args: str, timeout: float = 120) -> str:
        return ok(self.run(*args, timeout=timeout))

    def json(self, *args: str) -> Any:
        return as_json(self.run("--json", *args))

    def fail(self, *args: str, code: int = 1, timeout: float = 120) -> str:
        return failed(self.run(*args, timeout=timeout), code)


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil(hardfork="cancun", prune_history=True) as node:
        assert node.mine(CHAIN_HEAD) == CHAIN_HEAD
        yield node


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Solo]:
    amp_dir = tmp_path_factory.mktemp("ampctl") / "amp"
    server = start_solo(amp_dir, "solo.log")
    try:
        yield server
    finally:
        server.proc.stop()
        kill_postgres_in(amp_dir)


@pytest.fixture(scope="module")
def chain_provider(solo: Solo, anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Provider `anvil_rpc` for network `anvil`, registered through ampctl."""
    file = tmp_path_factory.mktemp("providers") / "anvil_rpc.toml"
    file.write_text(f'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "{anvil.url}"\n')
    ok(ampctl("provider", "register", "anvil_rpc", str(file), url=solo.url))
    return "anvil_rpc"


def generated_manifest(tmp_path: Path, network: str, *extra: str) -> Path:
    out = tmp_path / f"{network}-manifest.json"
    result = ampctl(
        "manifest", "generate", "--kind", "evm-rpc", "--network", network, "-o", str(out), *extra
    )
    ok(result)
    return out


# --- providers ---


def test_provider_register_list_inspect_rm(solo: Solo, tmp_path: Path) -> None:
    ctl = Ctl(solo.url)
    file = tmp_path / "spare.toml"
    file.write_text(
        'kind = "evm-rpc"\nnetwork = "sepolia"\nurl = "${SEPOLIA_RPC_URL}"\nrpc_batch_size = 10\n'
    )
    shown = ctl.ok("provider", "register", "spare", str(file))
    assert "spare" in shown and "sepolia" in shown
    assert (solo.amp_dir / "providers" / "spare.toml").is_file()

    spare = next(p for p in ctl.json("provider", "list")["providers"] if p["name"] == "spare")
    assert spare["url"] == "${SEPOLIA_RPC_URL}", "a placeholder stays a placeholder"
    assert spare["rpc_batch_size"] == 10
    table = ctl.ok("provider", "ls")
    assert "spare" in table and "${SEPOLIA_RPC_URL}" in table
    assert ctl.json("provider", "get", "spare")["network"] == "sepolia"

    ctl.ok("provider", "rm", "spare")
    ctl.ok("provider", "remove", "spare")  # idempotent
    assert not (solo.amp_dir / "providers" / "spare.toml").exists()
    stderr = ctl.fail("provider", "inspect", "spare")
    assert stderr == "error: PROVIDER_NOT_FOUND: provider spare not found\n"


def test_provider_refused_by_the_server(solo: Solo, tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('kind = "evm-rpc"\nnetwork = "x"\nurl = "ftp://nowhere"\n')
    stderr = Ctl(solo.url).fail("provider", "register", "bad", str(file))
    assert stderr.startswith("error: INVALID_REQUEST_BODY: ") and "url" in stderr


# --- manifests and datasets ---


def test_manifest_generate_is_local_and_complete(tmp_path: Path) -> None:
    # A dead admin URL: generating a manifest needs no server.
    ctl = Ctl("http://127.0.0.1:1")
    generate = ("manifest", "generate", "--kind", "evm-rpc")
    stdout = ctl.ok(
        *generate, "--network", "mainnet", "--start-block", "15", "--finalized-blocks-only"
    )
    assert json.loads(stdout) == generate_manifest("evm-rpc", "mainnet", 15, True)

    ctl.ok(*generate, "--network", "anvil", "-o", str(tmp_path))
    written = json.loads((tmp_path / "evm-rpc.json").read_text())
    assert written == generate_manifest("evm-rpc", "anvil", 0, False)

    usage = ctl.fail("manifest", "generate", "--kind", "solana", "--network", "x", code=2)
    assert "solana" in usage and "evm-rpc" in usage


def test_dataset_register_list_versions_inspect_manifest(solo: Solo, tmp_path: Path) -> None:
    ctl = Ctl(solo.url)
    first = generated_manifest(tmp_path, "anvil", "--start-block", "7")
    registered = ctl.json("dataset", "register", "demo/tokens", str(first))
    assert registered["tables"] == list(TABLES)
    assert "version" not in registered
    dev_hash = registered["manifest_hash"]

    # Without a version only `dev` moved: a bare reference means @latest, which is not there.
    assert ctl.fail("dataset", "inspect", "demo/tokens").startswith("error: DATASET_NOT_FOUND: ")
    assert ctl.json("dataset", "inspect", "demo/tokens@dev")["manifest_hash"] == dev_hash

    second = generated_manifest(tmp_path, "anvil", "--start-block", "9")
    shown = ctl.ok("dataset", "reg", "demo/tokens", str(second), "-t", "1.2.0")
    assert "Registered demo/tokens" in shown and "1.2.0" in shown

    latest = ctl.json("dataset", "get", "demo/tokens")
    assert latest["revision"] == "latest" and latest["start_block"] == 9
    by_version = ctl.json("dataset", "inspect", "demo/tokens@1.2.0")
    assert by_version["manifest_hash"] == latest["manifest_hash"] != dev_hash
    by_hash = ctl.json("dataset", "inspect", f"demo/tokens@{latest['manifest_hash']}")
    assert by_hash["start_block"] == 9
    assert "evm-rpc" in ctl.ok("dataset", "inspect", "demo/tokens@1.2.0")

    datasets = ctl.json("dataset", "list")["datasets"]
    entry = next(d for d in datasets if (d["namespace"], d["name"]) == ("demo", "tokens"))
    assert entry["versions"] == ["1.2.0"] and entry["latest_version"] == "1.2.0"
    assert "demo/tokens" in ctl.ok("dataset", "ls")

    versions = ctl.json("dataset", "versions", "demo/tokens")
    assert [v["version"] for v in versions["versions"]] == ["1.2.0"]
    assert versions["special_tags"] == {
        "latest": latest["manifest_hash"],
        "dev": latest["manifest_hash"],
    }
    table = ctl.ok("dataset", "versions", "demo/tokens")
    assert "1.2.0" in table and latest["manifest_hash"] in table and "dev" in table

    manifest = json.loads(ctl.ok("dataset", "manifest", "demo/tokens@1.2.0"))
    assert manifest == json.loads(second.read_text())

    stderr = ctl.fail("dataset", "inspect", "demo/missing@1.0.0")
    assert stderr == "error: DATASET_NOT_FOUND: dataset demo/missing@1.0.0 not found\n"
    assert "DATASET_NOT_FOUND" in ctl.fail("dataset", "versions", "demo/missing")
    assert "DATASET_NOT_FOUND" in ctl.fail("dataset", "manifest", "demo/missing")


def test_dataset_register_invalid_manifest_is_the_servers_error(solo: Solo, tmp_path: Path) -> None:
    file = tmp_path / "bad.json"
    file.write_text(json.dumps({"kind": "evm-rpc", "network": "anvil", "start_block": -1}))
    stderr = Ctl(solo.url).fail("dataset", "register", "demo/bad", str(file))
    assert stderr.startswith("error: MANIFEST_VALIDATION_ERROR: ") and "start_block" in stderr


# --- deploy and jobs ---


def test_deploy_watch_and_manage_the_job(solo: Solo, chain_provider: str, tmp_path: Path) -> None:
    ctl = Ctl(solo.url)
    manifest = generated_manifest(tmp_path, "anvil")
    ctl.ok("dataset", "register", "chain/anvil", str(manifest), "--tag", "1.0.0")
    deployed = ctl.ok("dataset", "deploy", "chain/anvil@1.0.0", "--end-block", "latest")
    assert deployed.startswith("Deployed chain/anvil@1.0.0 as job ")
    job_id = str(int(deployed.split()[-1]))

    stdout = ctl.ok("job", "progress", job_id, "--watch", timeout=240)
    assert f"Job {job_id}" in stdout and "COMPLETED" in stdout
    for table in TABLES:
        line = next(line for line in stdout.splitlines() if line.startswith(table))
        assert f"{CHAIN_HEAD}/{CHAIN_HEAD}" in line and "100.0%" in line

    progress = ctl.json("job", "progress", job_id)
    assert progress["job_status"] == "COMPLETED"
    assert {name: t["current_block"] for name, t in progress["tables"].items()} == dict.fromkeys(
        TABLES, CHAIN_HEAD
    )
    assert all(t["files_count"] > 0 for t in progress["tables"].values())
    shown = ctl.ok("job", "progress", job_id)
    assert all(table in shown for table in TABLES)

    info = ctl.json("job", "inspect", job_id)
    assert info["status"] == "COMPLETED"
    assert info["descriptor"]["end_block"] == "latest"
    assert info["descriptor"]["dataset_name"] == "anvil"
    assert "COMPLETED" in ctl.ok("job", "get", job_id)

    assert int(job_id) in [j["id"] for j in ctl.json("job", "list", "-s", "all")["jobs"]]
    assert int(job_id) not in [j["id"] for j in ctl.json("job", "ls")["jobs"]]
    assert "chain/anvil@" in ctl.ok("job", "ls", "-s", "completed")
    page = ctl.json("job", "ls", "-s", "all", "-l", "1")
    assert len(page["jobs"]) == 1 and page["next_cursor"] == page["jobs"][0]["id"]

    kinds = [e["event_type"] for e in ctl.json("job", "events", job_id)["events"]]
    assert kinds[0] == "SCHEDULED" and kinds[-1] == "COMPLETED"
    assert "SEGMENT_ASSIGNED" in ctl.ok("job", "events", job_id)

    segments = ctl.json("job", "segments", job_id)["segments"]
    assert {s["status"] for s in segments} == {"COMPLETED"}
    assert min(s["start_block"] for s in segments) == 0
    assert max(s["end_block"] for s in segments) == CHAIN_HEAD
    first = min(segments, key=lambda s: s["id"])
    assert f"0..{first['end_block']}" in ctl.ok("job", "segments", job_id)

    # Stopping a finished job changes nothing, every time.
    for _ in range(2):
        assert "already finished (COMPLETED)" in ctl.ok("job", "stop", job_id)
    assert ctl.json("job", "stop", job_id)["status"] == "COMPLETED"

    ctl.ok("job", "rm", job_id)
    assert ctl.fail("job", "inspect", job_id) == f"error: JOB_NOT_FOUND: job {job_id} not found\n"

    # A redeploy finds every block committed and completes at once; prune removes it.
    again = ctl.json("dataset", "deploy", "chain/anvil@1.0.0", "--end-block", "latest")["job_id"]
    ctl.ok("job", "progress", str(again), "--watch")
    ctl.ok("job", "prune", "-s", "completed")
    assert ctl.json("job", "ls", "-s", "completed")["jobs"] == []
    assert "JOB_NOT_FOUND" in ctl.fail("job", "get", str(again))


def test_continuous_job_stopped_while_watched(
    solo: Solo, chain_provider: str, tmp_path: Path
) -> None:
    ctl = Ctl(solo.url)
    manifest = generated_manifest(tmp_path, "anvil", "--start-block", "300")
    ctl.ok("dataset", "register", "chain/live", str(manifest))
    job_id = str(ctl.json("dataset", "deploy", "chain/live@dev")["job_id"])
    assert ctl.json("job", "get", job_id)["descriptor"]["end_block"] is None

    watcher = subprocess.Popen(
        [AMPCTL, "--admin-url", solo.url, "job", "progress", job_id, "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AMP_AUTH_TOKEN": "", "COLUMNS": "200"},
    )
    try:
        _wait_for_block(solo.url, job_id, CHAIN_HEAD)
        assert ctl.ok("job", "stop", job_id).startswith(f"Stop requested; job {job_id} is ")
        stdout, stderr = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, stderr
    assert "STOPPED" in stdout and "continuous" in stdout
    for table in TABLES:
        line = next(line for line in stdout.splitlines() if line.startswith(table))
        assert "following the chain head" in line and f"#{CHAIN_HEAD}" in line


def _wait_for_block(url: str, job_id: str, block: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tables = httpx.get(f"{url}/jobs/{job_id}/progress").json()["tables"]
        if tables and all(t["current_block"] == block for t in tables.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach block {block} within {timeout}s")


class _RefusingHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server naming
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"forbidden: no such API key")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_node() -> Iterator[str]:
    """An "RPC node" that answers every request 403: extraction from it fails for real."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_watch_of_a_failing_job_exits_1_with_the_detail(
    solo: Solo, refusing_node: str, tmp_path: Path
) -> None:
    ctl = Ctl(solo.url)
    provider = tmp_path / "refusing.toml"
    provider.write_text(f'kind = "evm-rpc"\nnetwork = "refusing"\nurl = "{refusing_node}"\n')
    ctl.ok("provider", "register", "refusing", str(provider))
    ctl.ok("dataset", "register", "broken/chain", str(generated_manifest(tmp_path, "refusing")))
    job_id = str(ctl.json("dataset", "deploy", "broken/chain@dev", "--end-block", "20")["job_id"])

    result = ctl.run("job", "progress", job_id, "--watch", timeout=240)
    stderr = failed(result)
    assert "ERROR" in result.stdout
    assert stderr.startswith(f"error: job {job_id} ended ERROR: SEGMENT_RETRIES_EXHAUSTED: ")
    assert "403" in stderr and "refusing" in stderr
    assert len(stderr.splitlines()) == 1

    final = ctl.json("job", "progress", job_id)
    assert final["job_status"] == "ERROR"
    assert final["detail"]["error_code"] == "SEGMENT_RETRIES_EXHAUSTED"
    # With --json the watch prints the final JSON and still exits 1.
    result = ctl.run("--json", "job", "progress", job_id, "-w")
    assert json.loads(result.stdout)["job_status"] == "ERROR"
    assert "SEGMENT_RETRIES_EXHAUSTED" in failed(result)


def test_deploy_errors_are_the_servers(solo: Solo) -> None:
    ctl = Ctl(solo.url)
    stderr = ctl.fail("dataset", "deploy", "nobody/nothing@1.0.0")
    assert stderr.startswith("error: DATASET_NOT_FOUND: ")
    stderr = ctl.fail("job", "stop", "987654")
    assert stderr == "error: JOB_NOT_FOUND: job 987654 not found\n"


# --- workers ---


def test_worker_list_and_inspect(solo: Solo) -> None:
    ctl = Ctl(solo.url)
    embedded = next(w for w in ctl.json("worker", "list")["workers"] if w["node_id"] == "worker")
    assert embedded["status"] == "active"
    table = ctl.ok("worker", "ls")
    assert "worker" in table and "active" in table
    assert f"{embedded['active_segments']} / {embedded['capacity']}" in table

    info = ctl.json("worker", "inspect", "worker")
    assert info["node_id"] == "worker" and info["info"]["version"]
    assert info["capacity"] == embedded["capacity"] >= 1
    shown = ctl.ok("worker", "get", "worker")
    assert info["info"]["version"] in shown and "Last heartbeat" in shown

    assert (
        ctl.fail("worker", "inspect", "ghost")
        == "error: WORKER_NOT_FOUND: worker ghost not found\n"
    )


# --- connection and authentication ---


def test_unreachable_admin_url_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("job", "ls"), ("dataset", "list", "--json"), ("worker", "inspect", "worker")):
        stderr = Ctl(url).fail(*args)
        assert len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith(f"error: cannot reach the Admin API at {url}: ")
    # The flag after the command wins over the environment.
    stderr = Ctl("http://127.0.0.1:9").fail("job", "rm", "1", "--admin-url", url)
    assert stderr.startswith(f"error: cannot reach the Admin API at {url}: ")


def test_auth_token(tmp_path: Path) -> None:
    amp_dir = tmp_path / "amp"
    server = start_solo(amp_dir, "solo.log", {"AMP_CONFIG_ADMIN_API_TOKEN": "secret"})
    try:
        ctl = Ctl(server.url)
        assert ctl.fail("worker", "list").startswith("error: UNAUTHORIZED: ")
        assert ctl.fail("--auth-token", "wrong", "worker", "list").startswith(
            "error: UNAUTHORIZED: "
        )

        workers = ctl.json("--auth-token", "secret", "worker", "list")["workers"]
        assert [w["node_id"] for w in workers] == ["worker"]
        assert "worker" in ctl.ok("worker", "ls", "--auth-token", "secret")
        from_env = Ctl(server.url, env={"AMP_AUTH_TOKEN": "secret"})
        assert "No jobs" in from_env.ok("job", "ls", "-s", "all")
    finally:
        server.proc.stop()
        kill_postgres_in(amp_dir)
