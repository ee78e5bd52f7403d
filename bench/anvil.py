"""An anvil process for the benchmark: start on a free port, talk JSON-RPC, always stop.

The benchmark's own copy (bench/ depends on nothing under tests/): the same flags the spec
asks for long chains (`--hardfork cancun --prune-history`), its output to a log file so a
failed start can say why.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
BUNDLED_ANVIL = REPO / ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


class AnvilError(RuntimeError):
    """anvil could not be started, or answered a JSON-RPC call with an error."""


def find_anvil() -> Path:
    """The anvil binary: $AMP_ANVIL_BIN, else the one `make setup` installs."""
    configured = os.environ.get("AMP_ANVIL_BIN")
    path = Path(configured) if configured else BUNDLED_ANVIL
    if not os.access(path, os.X_OK):
        raise AnvilError(f"anvil not found at {path}: run `make setup` (or set AMP_ANVIL_BIN)")
    return path


def anvil_version() -> str:
    out = subprocess.run(
        [str(find_anvil()), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    return out.splitlines()[0].removeprefix("anvil Version: ").strip() if out else "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """anvil on 127.0.0.1 with pruned history; a context manager that always stops it."""

    def __init__(
        self,
        log_path: Path,
        *,
        accounts: int = 10,
        load_state: Path | None = None,
        dump_state: Path | None = None,
        no_mining: bool = False,
        startup_timeout: float = 120.0,
        prune_history: bool | int = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.accounts = accounts
        # True: no history kept; N: the states of the last N blocks kept (they can be traced)
        self.prune_history = prune_history
        self.load_state = load_state
        self.dump_state = dump_state
        self.no_mining = no_mining
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self._next_id = 0

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> Anvil:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        args = [
            str(find_anvil()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--hardfork", "cancun",
            *_prune_args(self.prune_history),
            "--accounts", str(self.accounts),
            "--order", "fifo",
            "--quiet",
        ]  # fmt: skip
        if self.no_mining:
            args.append("--no-mining")
        if self.load_state is not None:
            args += ["--load-state", str(self.load_state)]
        if self.dump_state is not None:
            args += ["--dump-state", str(self.dump_state)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        # Its own process group, so a stop reaches it even if it forks.
        self._proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._client = httpx.Client(timeout=httpx.Timeout(600.0, connect=5.0))
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise AnvilError(f"anvil exited at start (code {self._proc.returncode}): {tail}")
            try:
                self.call("eth_chainId")
                return
            except (httpx.HTTPError, AnvilError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise AnvilError(
                        f"anvil did not answer on {self.url} within {self.startup_timeout:.0f} s"
                    ) from None
                time.sleep(0.1)

    def stop(self, timeout: float = 120.0) -> None:
        """SIGTERM (anvil writes --dump-state then), SIGKILL after `timeout`."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        except ProcessLookupError:
            pass

    def rss_mib(self) -> float | None:
        """anvil's current resident memory (for the record; it is not counted for any tool)."""
        if self._proc is None:
            return None
        try:
            for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; raises AnvilError with the method and the node's message."""
        return self.batch([(method, list(params))])[0]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """A JSON-RPC batch; results in call order; any error fails the whole batch."""
        assert self._client is not None, "anvil is not running"
        body = []
        for method, params in calls:
            self._next_id += 1
            body.append({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        response = self._client.post(
            self.url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        answers = response.json()
        if isinstance(answers, dict):  # a batch-level error
            raise AnvilError(f"{calls[0][0]}...: {answers.get('error')}")
        by_id = {a["id"]: a for a in answers}
        results = []
        for request in body:
            answer = by_id.get(request["id"])
            if answer is None or "error" in answer:
                error = answer.get("error") if answer else "no answer"
                raise AnvilError(f"{request['method']} {request['params']}: {error}")
            results.append(answer["result"])
        return results


def _prune_args(prune: bool | int) -> list[str]:
    if prune is True:
        return ["--prune-history"]
    if prune is False:
        return []
    return ["--prune-history", str(prune)]
