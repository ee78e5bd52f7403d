"""Leaving the process on an error, without finalizing the interpreter."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush the output and logs, then end the process with `code` at once.

    Interpreter finalization is skipped on purpose: the Rust runtimes behind obstore and
    DataFusion keep threads that may still be winding down a request, and one that touches
    Python while the interpreter is torn down aborts the process (SIGABRT instead of exit 1).
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
