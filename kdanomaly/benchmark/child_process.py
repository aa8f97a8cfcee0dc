"""Run a benchmark cell's process so that it stops when the benchmark is stopped.

Ctrl-C reaches the whole process group, but ``kill PID`` (SIGTERM) reaches only the parent; Python's default
SIGTERM action ends the parent at once and leaves the cell orphaned, training on for an hour with nobody to record
its row.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

TERMINATE_GRACE_SECONDS = 10.0


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_child(command: Sequence[str], env: Mapping[str, str]) -> None:
    """Run ``command`` to completion (non-zero exit → CalledProcessError); a SIGTERM or Ctrl-C here stops it too.

    The child gets SIGTERM, then SIGKILL after ``TERMINATE_GRACE_SECONDS``; the signal's exit then goes on."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        with subprocess.Popen(list(command), env=dict(env), stdout=subprocess.DEVNULL) as process:
            try:
                code = process.wait()
            except BaseException:
                process.terminate()
                try:
                    process.wait(TERMINATE_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        if code:
            raise subprocess.CalledProcessError(code, list(command))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
