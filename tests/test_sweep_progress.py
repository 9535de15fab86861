"""`verl-spro sweep` shows progress with an ETA, and SIGTERM / SIGINT / its own death stop every worker it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verl_spro.processes import pid_alive
from verl_spro.sweep import TINY, SweepProgress, run_sweep


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_come_every_period_with_an_eta_from_the_rate():
    clock, lines = _Clock(), []
    progress = SweepProgress(1200, 15, every=30.0, clock=clock, say=lambda line, flush: lines.append(line))
    clock.now += 29
    progress.tick()
    assert lines == []
    clock.now += 1
    progress.tick()
    assert lines == [
        "sweep: 0/1200 RL steps (0%), 0/15 units done; elapsed 30s, ETA after the first RL step (warming up)"
    ]
    clock.now += 30
    progress.unit_done()
    progress.update(120)  # 120 steps in 60 s: 1080 left take 540 s
    assert lines[-1] == "sweep: 120/1200 RL steps (10%), 1/15 units done; elapsed 1m00s, ETA 9m00s"
    progress.update(1)  # not due yet
    assert len(lines) == 2


def test_workers_report_their_rl_steps_to_the_parent(capsys):
    """A spawned worker: every RL step of every arm reaches the parent's count through the queue."""
    run_sweep(TINY, ("sort",), (0.2,), [0], workers=2, progress_every=0.0)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sweep: ")]
    total = 2 * TINY.steps  # arms x RL updates per run
    assert lines and lines[-1].startswith(f"sweep: {total}/{total} RL steps (100%), 1/1 units done")


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(proc.name))
    return found


def _workers(pid: int) -> list[int]:
    workers = []
    for child in _children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(child)
    return workers


@pytest.fixture
def long_sweep(tmp_path):
    """A sweep that would run for minutes, started in its own session; yields (process, its 2 workers)."""
    cmd = [sys.executable, "-m", "verl_spro.cli", "sweep", "--tiny", "--steps", "2000", "--tasks", "sort"]
    cmd += ["--seeds", "2", "--workers", "2", "--no-plots", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        workers = _workers(proc.pid)
    try:
        assert len(workers) == 2, "the sweep did not start its 2 workers"
        yield proc, workers
    finally:
        for pid in workers:  # whatever the test saw, nothing of this sweep outlives it
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(pid_alive(p) for p in pids)


@pytest.mark.parametrize(
    ("signum", "rc", "how"), [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_to_the_sweep_alone_stops_its_workers_within_seconds(long_sweep, signum, rc, how):
    proc, workers = long_sweep
    time.sleep(2)  # into the work
    os.kill(proc.pid, signum)  # the parent only, as `kill PID` does (Ctrl-C would reach the whole group)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == rc, err[-2000:]
    assert _gone_within(workers, 10)
    assert f"verl-spro sweep: stopped 2 worker process(es) (pid {', '.join(map(str, sorted(workers)))})" in err
    assert err.strip().splitlines()[-1].startswith(f"verl-spro sweep: {how}; the finished (task, seed) units are in")
    assert "Traceback" not in err
    assert "No supported accelerator detected" not in err  # verl's CPU-only notice, once per worker before


def test_workers_die_with_a_killed_sweep(long_sweep):
    proc, workers = long_sweep
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the kernel's parent-death signal stops the workers
    assert _gone_within(workers, 10)
