"""The peers' own virtualenv (bench/work/peers-venv): created on first use, pip only.

cryo and ethereum-etl are installed separately so that one failing leaves the other usable;
each success is remembered in a marker file holding its pinned requirements, so later runs
skip pip entirely. A failure is returned as text for the results, never raised.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# ethereum-etl 2.4.2 pins eth-abi 2.x, whose parsimonious 0.8 calls inspect.getargspec,
# gone in Python 3.11: parsimonious 0.10 is installed over it (pip warns about the pin).
PEER_REQUIREMENTS: dict[str, list[list[str]]] = {
    "cryo": [["cryo==0.3.2"]],
    "ethereum-etl": [["ethereum-etl==2.4.2"], ["parsimonious==0.10.0"]],
}
# What proves an install works: a command run with the venv's python.
_SMOKE = {
    "cryo": ["-c", "import cryo"],
    "ethereum-etl": ["-m", "ethereumetl", "--version"],
}
_PIP_TIMEOUT = 900


@dataclass(frozen=True)
class PeerInstall:
    name: str
    python: Path
    version: str | None
    error: str | None  # why it cannot run, if it cannot


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-lines:])


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _ensure_venv(venv: Path) -> str | None:
    if _venv_python(venv).exists():
        return None
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        return f"python -m venv {venv} failed: {_tail(exc.stderr or exc.stdout)}"
    except subprocess.TimeoutExpired:
        return f"python -m venv {venv} timed out"
    return None


def _version(python: Path, distribution: str) -> str | None:
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_peer(venv: Path, name: str, log) -> PeerInstall:  # noqa: ANN001 - a print function
    """Install peer `name` into `venv` unless already done; report what can run."""
    python = _venv_python(venv)
    error = _ensure_venv(venv)
    if error is not None:
        return PeerInstall(name, python, None, error)
    steps = PEER_REQUIREMENTS[name]
    marker = venv / f".bench-installed-{name}"
    wanted = repr(steps)
    if not (marker.exists() and marker.read_text() == wanted):
        log(f"installing {name} into {venv} (pip, once)")
        for requirements in steps:
            try:
                done = subprocess.run(
                    [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     *requirements],
                    capture_output=True, text=True, timeout=_PIP_TIMEOUT,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                return PeerInstall(name, python, None, f"pip install {requirements} timed out")
            if done.returncode != 0:
                text = "\n".join(
                    line
                    for line in (done.stderr + done.stdout).splitlines()
                    if not line.startswith("WARNING: Location")  # noise from local indexes
                )
                return PeerInstall(
                    name, python, None, f"pip install {' '.join(requirements)}: {_tail(text)}"
                )
        marker.write_text(wanted)
    smoke = subprocess.run(
        [str(python), *_SMOKE[name]], capture_output=True, text=True, timeout=120
    )
    if smoke.returncode != 0:
        marker.unlink(missing_ok=True)
        return PeerInstall(
            name, python, None, f"{name} is installed but does not run: {_tail(smoke.stderr)}"
        )
    return PeerInstall(name, python, _version(python, name), None)
