"""`make demo`: run ampd solo end to end in a throwaway amp dir and stop everything after.

It grows with the project; today it starts solo on its managed PostgreSQL, checks that the
Admin API answers, and shuts solo down with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

AMPD = str(Path(sys.executable).parent / "ampd")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ampd-demo-") as tmp:
        amp_dir = Path(tmp) / "amp"
        log_path = Path(tmp) / "solo.log"
        print(f"starting ampd solo in {amp_dir}")
        env = {**os.environ, "AMP_CONFIG_ADMIN_API_ADDR": "127.0.0.1:0"}
        with open(log_path, "wb") as out:
            solo = subprocess.Popen(
                [AMPD, "solo", "--amp-dir", str(amp_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            admin = wait_for(log_path, r"admin API listening on (http://\S+)", solo)
            wait_for(log_path, r"ampd solo is up", solo)
            health = httpx.get(f"{admin}/healthz", timeout=5)
            print(f"admin API at {admin}: GET /healthz -> {health.status_code} {health.json()}")
        finally:
            solo.send_signal(signal.SIGTERM)
            code = solo.wait(60)
        print(log_path.read_text(), end="")
        print(f"ampd solo exited with code {code}")
        return code


def wait_for(log_path: Path, pattern: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text())
        if match:
            return match.group(1) if match.groups() else match.group(0)
        if proc.poll() is not None:
            sys.exit(f"ampd solo exited early:\n{log_path.read_text()}")
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {pattern!r}:\n{log_path.read_text()}")


if __name__ == "__main__":
    sys.exit(main())
