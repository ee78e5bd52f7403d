"""Staging: local files a writer fills before they go into the data store.

Each staging file holds an exclusive `flock` while its writer lives, so cleanup in any
process can tell a live writer's file from one whose writer is gone.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path

# A staging file takes its lock within microseconds of being created; younger unlocked files
# are left alone so that cleanup never races a writer between create and lock.
STAGING_GRACE_SECS = 5.0


class StagingFile:
    """A local file being written before it goes into the store.

    It holds an exclusive `flock` from creation until `release`: the kernel drops the lock
    when the process dies, so cleanup in any process can tell a live writer's file (locked)
    from one whose writer is gone (unlocked), without guessing from its age.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Drop the lock (after the file was put into the store or deleted)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def discard(self) -> None:
        """Delete the file, then drop the lock."""
        self.path.unlink(missing_ok=True)
        self.release()


class StagingArea:
    """A folder of staging files (under a local data dir, or in TMPDIR for a remote store)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def new_file(self, suffix: str = "") -> StagingFile:
        self.folder.mkdir(parents=True, exist_ok=True)
        return StagingFile(self.folder / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}")

    def cleanup(self) -> int:
        """Delete the files nobody holds (past the grace time); returns the count."""
        if not self.folder.is_dir():
            return 0
        cutoff = time.time() - STAGING_GRACE_SECS
        return sum(_remove_if_abandoned(path, cutoff) for path in self.folder.iterdir())


def _remove_if_abandoned(path: Path, cutoff: float) -> bool:
    """Delete a staging file if no process holds its lock (and it is past the grace time)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if os.fstat(fd).st_mtime >= cutoff:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False
        if same:  # still the file we locked, not a new one under the same name
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        os.close(fd)
