"""A real anvil node for tests: find the binary, start it on a free port, stop it for sure.

`Anvil.rpc` is a deliberately tiny synchronous JSON-RPC client (urllib) so tests can fetch
ground truth without going through the code under test.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_BIN_DIR = REPO / ".tools" / "node_modules" / "@foundry-rs"
BUNDLED_ANVIL = _BIN_DIR / "anvil-linux-amd64" / "bin" / "anvil"
BUNDLED_CAST = _BIN_DIR / "cast-linux-amd64" / "bin" / "cast"

# The first dev accounts of anvil's default mnemonic ("test test ... junk"), well known.
DEV_ACCOUNTS = [
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
    "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
    "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65",
]
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
]


class AnvilError(RuntimeError):
    """anvil could not be started, or answered a JSON-RPC call with an error."""


def _find(env_var: str, bundled: Path, name: str) -> str | None:
    configured = os.environ.get(env_var)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access(bundled, os.X_OK):
        return str(bundled)
    return shutil.which(name)


def find_anvil() -> str | None:
    """The anvil binary: $AMP_ANVIL_BIN, else the one `make setup` installs, else PATH."""
    return _find("AMP_ANVIL_BIN", BUNDLED_ANVIL, "anvil")


def find_cast() -> str | None:
    """The cast binary: $AMP_CAST_BIN, else the one `make setup` installs, else PATH."""
    return _find("AMP_CAST_BIN", BUNDLED_CAST, "cast")


def require_anvil() -> str:
    """The anvil binary, or skip the test with a message saying how to get it."""
    path = find_anvil()
    if path is None:
        pytest.skip(
            f"anvil not found (looked at $AMP_ANVIL_BIN, {BUNDLED_ANVIL} and PATH); "
            "run `make setup` to install it"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """An anvil process on 127.0.0.1; use as a context manager (or `start()`/`stop()`)."""

    def __init__(
        self,
        port: int | None = None,
        hardfork: str | None = None,
        prune_history: bool = False,
        ipc_path: str | os.PathLike[str] | None = None,
        block_time: float | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.hardfork = hardfork
        self.prune_history = prune_history
        self.ipc_path = str(ipc_path) if ipc_path is not None else None
        self.block_time = block_time
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._ids = itertools.count(1)

    @property
    def ipc_url(self) -> str:
        if self.ipc_path is None:
            raise AnvilError("this anvil was started without ipc_path")
        return f"ipc://{self.ipc_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self, binary: str) -> list[str]:
        cmd = [binary, "--host", "127.0.0.1", "--port", str(self.port)]
        if self.hardfork:
            cmd += ["--hardfork", self.hardfork]
        if self.prune_history:
            cmd.append("--prune-history")
        if self.ipc_path:
            cmd += ["--ipc", self.ipc_path]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        return cmd + list(self.extra_args)

    def start(self) -> Anvil:
        binary = require_anvil()
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            self.command(binary), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                output = self.output()
                self.stop()
                raise AnvilError(f"anvil exited with code {code}:\n{output}")
            try:
                self.rpc("eth_chainId", timeout=1.0)
            except (OSError, AnvilError):
                if time.monotonic() > deadline:
                    output = self.output()
                    self.stop()
                    raise AnvilError(
                        f"anvil did not answer within {self.startup_timeout}s:\n{output}"
                    ) from None
                time.sleep(0.05)
                continue
            if self.ipc_path and not os.path.exists(self.ipc_path):
                time.sleep(0.05)
                continue
            return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        """What anvil printed so far (for failure messages)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- JSON-RPC, independent of the code under test ---

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """Call `method` over HTTP and return its result; raise AnvilError on an error object."""
        answer = self.rpc_raw(method, *params, timeout=timeout)
        if "error" in answer:
            raise AnvilError(f"{method}{list(params)!r}: {answer['error']}")
        return answer["result"]

    def rpc_raw(self, method: str, *params: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Call `method` over HTTP and return the whole JSON-RPC answer (result or error)."""
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, n: int = 1) -> int:
        """Mine `n` blocks; return the new head."""
        self.rpc("anvil_mine", hex(n))
        return self.block_number()

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", enabled)

    def send(self, tx: dict[str, Any]) -> str:
        """eth_sendTransaction from an unlocked dev account; return the tx hash."""
        return self.rpc("eth_sendTransaction", tx)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.rpc("eth_getTransactionReceipt", tx_hash)

    def block(self, number: int, full: bool = True) -> dict[str, Any] | None:
        return self.rpc("eth_getBlockByNumber", hex(number), full)

    def block_receipts(self, number: int) -> list[dict[str, Any]] | None:
        return self.rpc("eth_getBlockReceipts", hex(number))
