"""A benchmark cell's process stops with the benchmark instead of training on, orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdanomaly.benchmark.child_process import run_child

SLEEPING_CHILD = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
PARENT = "import os, sys; from kdanomaly.benchmark.child_process import run_child; run_child(sys.argv[1:], os.environ)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_the_parent_stops_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    child = [sys.executable, "-c", SLEEPING_CHILD, str(pid_file)]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *child])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        assert not alive(child_pid), "the child outlived its parent"
    finally:
        parent.kill()
        if pid_file.exists() and pid_file.read_text() and alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_failing_child_raises_with_its_exit_code() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_child([sys.executable, "-c", "raise SystemExit(3)"], os.environ)
    assert failure.value.returncode == 3


def test_the_previous_sigterm_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    run_child([sys.executable, "-c", "pass"], os.environ)
    assert signal.getsignal(signal.SIGTERM) is before
