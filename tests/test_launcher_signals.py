"""The launchers (scripts/*.sh) find verl-spro's environment or say how, answer at once when there is no Ray head,
stop their helpers on SIGTERM with a line, and signal only the Ray nodes they started (PID files checked)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from verl_spro.processes import pid_alive

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RAY_CLUSTER = SCRIPTS / "ray_cluster.sh"
TRAIN = SCRIPTS / "train_single_node.sh"


def _bare_env(**extra: str) -> dict[str, str]:
    """No active environment: verl-spro's bin directory is not on PATH, SPRO_PYTHON unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPRO_", "SLURM_", "RAY_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_launcher_finds_the_repository_venv_without_activation():
    if not (REPO / ".venv" / "bin" / "verl-spro").exists():
        pytest.skip("no .venv in this checkout (scripts/setup_cpu.sh creates it)")
    r = subprocess.run(
        [str(TRAIN), "--cfg", "job", "trainer.total_epochs=3"],
        env=_bare_env(SPRO_GPUS_PER_NODE="2"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load(r.stdout)["trainer"]["total_epochs"] == 3


def test_launcher_without_any_environment_says_how_in_one_line(tmp_path):
    scripts = tmp_path / "scripts"  # a checkout without .venv
    shutil.copytree(SCRIPTS, scripts)
    for script in ("train_single_node.sh", "ray_cluster.sh"):
        r = subprocess.run([str(scripts / script), "status"], env=_bare_env(), capture_output=True, text=True)
        assert r.returncode == 127
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "verl-spro is not installed here" in lines[0] and "setup_cpu.sh" in lines[0]


def test_smoke_without_a_head_says_so_in_seconds(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    r = subprocess.run(
        [str(RAY_CLUSTER), "smoke"],
        env=_bare_env(RAY_ADDRESS=address, SPRO_RAY_STATE_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 20
    assert r.returncode == 3
    assert f"SMOKE FAILED: no Ray head at {address}" in r.stdout.strip().splitlines()[-1]


def test_sigterm_stops_the_launcher_and_its_wait_helper_with_a_line(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    env = _bare_env(RAY_ADDRESS=address, SPRO_RAY_STATE_DIR=str(tmp_path), SPRO_RAY_WAIT_TIMEOUT="120")
    proc = subprocess.Popen(
        [str(RAY_CLUSTER), "wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    helper = None
    try:
        deadline = time.monotonic() + 30
        while helper is None and time.monotonic() < deadline:
            time.sleep(0.3)
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                if b"ray_tools.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                    helper = int(child)
        assert helper is not None, "the wait helper did not start"
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 143
        assert f"stopping the wait for the cluster (pid {helper}) on SIGTERM" in out
        deadline = time.monotonic() + 5
        while pid_alive(helper) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(helper)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if helper is not None and pid_alive(helper):
            os.kill(helper, signal.SIGKILL)


def _start_time(pid: int) -> str:
    return subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def test_stop_signals_no_process_a_stale_pid_file_names(tmp_path):
    strangers = [subprocess.Popen(["sleep", "120"]) for _ in range(3)]
    try:
        reused, not_ray, unrecorded = strangers
        # A PID reused by another process: the recorded start time is the Ray node's, not this one's.
        (tmp_path / "head-alpha.pid").write_text(f"{reused.pid}\n")
        (tmp_path / "head-alpha.started").write_text("Mon Jan  1 00:00:00 2024\n")
        # The right start time, but not a `ray start`.
        (tmp_path / "worker-beta.pid").write_text(f"{not_ray.pid}\n")
        (tmp_path / "worker-beta.started").write_text(_start_time(not_ray.pid) + "\n")
        # No start time recorded (a file from an older launcher).
        (tmp_path / "worker-gamma.pid").write_text(f"{unrecorded.pid}\n")
        # A process that is gone.
        gone = subprocess.Popen(["true"])
        gone.wait()
        (tmp_path / "worker-delta.pid").write_text(f"{gone.pid}\n")
        r = subprocess.run(
            [str(RAY_CLUSTER), "stop"],
            env=_bare_env(SPRO_RAY_STATE_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert all(s.poll() is None for s in strangers), "a process a stale PID file names was signalled"
        assert f"pid {reused.pid} is now another process" in r.stderr
        assert f"pid {not_ray.pid} is not a 'ray start' (sleep)" in r.stderr
        assert f"no start time was recorded for pid {unrecorded.pid}" in r.stderr
        assert f"pid {gone.pid} is not running" in r.stderr
        assert r.stderr.count("removed, nothing signalled") == 4 and "stopping Ray" not in r.stderr
        assert not list(tmp_path.glob("*.pid")) and not list(tmp_path.glob("*.started"))
    finally:
        for s in strangers:
            s.kill()
            s.wait()
