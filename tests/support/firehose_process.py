"""The test Firehose server as a child process: start it, read its URL, stop it for sure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path


class FirehoseServerProcess:
    """`python -m support.firehose_server ...` as a child process; `url` once it listens."""

    def __init__(self, args: list[str], log_path: str | os.PathLike[str], timeout: float = 60):
        tests_dir = str(Path(__file__).resolve().parents[1])
        path = [tests_dir, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.log_path = Path(log_path)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.firehose_server", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.url = self._read_url(timeout)

    def _read_url(self, timeout: float) -> str:
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline().decode().strip()
        finally:
            timer.cancel()
        if not line.startswith("http://"):
            self.stop()
            log = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the Firehose server process did not start ({line!r}):\n{log}")
        return line

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 10 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> FirehoseServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
