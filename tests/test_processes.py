"""The one PID-liveness check (verl_spro/processes.py) on real processes: running, zombie, reaped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from verl_spro.processes import pid_alive


def test_a_running_process_is_alive_and_a_zombie_or_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        deadline = time.time() + 10
        while pid_alive(child.pid) and time.time() < deadline:  # exited, not reaped yet: a zombie, dead
            time.sleep(0.05)
        assert not pid_alive(child.pid)
        assert child.poll() is not None  # still there to reap: it was a zombie, not gone
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
