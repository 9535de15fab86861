"""One output rule for every command that writes into a folder, and a clean-up that touches only its own run.

verl_spro.output_files.claim_out_dir serves smoke, sweep, demo and bench (prepare-data writes a file: an empty path
is refused the same way); verl_spro.smoke.stop_run signals only the processes of its run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verl_spro.cli import main
from verl_spro.output_files import OutDirLock, claim_out_dir

#: A command and options that make a run cheap, for the refusals (which come before any work).
COMMANDS = {
    "smoke": [],
    "demo": ["--quick", "--no-plots"],
    "sweep": ["--tiny", "--no-plots"],
    "bench": ["--quick"],
}
EARLIER = {"smoke": "main_ppo.log", "demo": "metrics.csv", "sweep": "steps.csv", "bench": "bench.csv"}


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["smoke", "--out", ""],
        ["demo", "--out", ""],
        ["sweep", "--out", " "],
        ["bench", "--out", ""],
        ["prepare-data", "in.jsonl", "-o", ""],
        ["prepare-data", "in.jsonl", "-o", "x.parquet", "--rejects", ""],
    ],
)
def test_an_empty_path_is_refused_before_any_work(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "is empty: give a path" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"], "a refused run wrote into the current directory"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unsafe_folder_is_refused(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out, what in ((".", "current directory"), (str(tmp_path), "current directory"), ("/", "file system root")):
        assert _exit_code([command, "--out", out, *COMMANDS[command]]) == 2
        err = capsys.readouterr().err
        assert what in err and len(err.strip().splitlines()) == 1, err
    assert not any(work.iterdir())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_earlier_run_is_refused_and_left_as_it_was(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / EARLIER[command]
    earlier.write_text("earlier results")
    assert _exit_code([command, "--out", str(tmp_path), *COMMANDS[command]]) == 2
    err = capsys.readouterr().err
    flag = "--fresh" if command == "smoke" else "--force"
    assert f"holds an earlier run ({EARLIER[command]})" in err and flag in err, err
    assert ("--resume" in err) == (command == "smoke")
    assert len(err.strip().splitlines()) == 1 and earlier.read_text() == "earlier results"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_second_run_into_a_folder_in_use_is_refused_by_the_lock(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; from verl_spro.output_files import OutDirLock; "
            f"OutDirLock(Path({str(tmp_path)!r})); print('locked', flush=True); import time; time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _exit_code([command, "--out", str(tmp_path), *COMMANDS[command]]) == 2
        err = capsys.readouterr().err
        assert f"another run is writing there (PID {holder.pid}" in err and len(err.strip().splitlines()) == 1, err
    finally:
        holder.kill()
        holder.wait()
    # the kernel drops a dead holder's lock: no stale lock to clean up by hand
    claim = claim_out_dir(tmp_path)
    assert isinstance(claim, OutDirLock)
    claim.release()


def test_sweep_force_removes_the_earlier_results_first(tmp_path: Path) -> None:
    """An interrupted --force sweep must not leave the old summary beside new partial steps."""
    for name in ("steps.csv", "runs.csv", "summary.csv", "sweep.png"):
        (tmp_path / name).write_text("old")
    args = ["sweep", "--out", str(tmp_path), "--tiny", "--no-plots", "--force", "--seeds", "1", "--tasks", "sort"]
    assert _exit_code([*args, "--betas", "0.05", "--steps", "1", "--workers", "1"]) == 0
    assert "old" not in {(tmp_path / name).read_text() for name in ("steps.csv", "runs.csv", "summary.csv")}
    assert not (tmp_path / "sweep.png").exists()


# ---------------------------------------------------------------------------------------------------- clean-up


def _sleeper(env: dict[str, str] | None = None, argv: tuple[str, ...] = (), **popen) -> subprocess.Popen:
    """A process that sleeps, with ``env`` added to its environment and ``argv`` in its command line."""
    command = [sys.executable, "-c", "import time; time.sleep(300)", *argv]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, **popen)


def test_clean_up_signals_only_this_runs_processes(tmp_path: Path) -> None:
    """Its session (main_ppo's, with a grandchild) and the processes whose RAY_TMPDIR is exactly this run's; not a
    process naming the Ray folder in its command line, not another run's under a longer path."""
    from verl_spro.smoke import run_pids, stop_run

    ray_tmp = tmp_path / "ray"
    main_ppo = subprocess.Popen(
        ["bash", "-c", "sleep 300 & wait"], start_new_session=True, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    )
    raylet = _sleeper({"RAY_TMPDIR": str(ray_tmp)}, start_new_session=True)  # Ray daemons leave the session
    strangers = [
        _sleeper(argv=(str(ray_tmp / "session_latest" / "logs" / "raylet.out"),)),  # tail -F OUT/ray/...
        _sleeper({"RAY_TMPDIR": f"{ray_tmp}2"}, start_new_session=True),  # another run under a longer path
        _sleeper({"RAY_TMPDIR": str(tmp_path)}, start_new_session=True),  # a folder above it
    ]
    try:
        time.sleep(0.5)
        ours = set(run_pids(main_ppo.pid, ray_tmp))
        assert {main_ppo.pid, raylet.pid} <= ours and len(ours) == 3, ours  # and main_ppo's child
        assert not ours & {p.pid for p in strangers}
        line = stop_run(main_ppo, ray_tmp, grace_s=5)
        assert main_ppo.wait(timeout=5) is not None and raylet.wait(timeout=5) is not None
        assert line.startswith("stopped 3 process(es) of this run"), line
        assert all(p.poll() is None for p in strangers), "a stranger's process was signalled"
    finally:
        for proc in (main_ppo, raylet, *strangers):
            proc.kill()
            proc.wait()


def test_a_process_it_may_not_signal_is_skipped_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a non-root user, a process of another user raises PermissionError: skipped, named, no traceback; the
    run's other processes are still stopped."""
    from verl_spro import smoke

    ray_tmp = tmp_path / "ray"
    main_ppo = _sleeper(start_new_session=True)
    foreign = _sleeper({"RAY_TMPDIR": str(ray_tmp)}, start_new_session=True)
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == foreign.pid and sig != 0:
            raise PermissionError(1, "Operation not permitted")
        real_kill(pid, sig)

    try:
        with monkeypatch.context() as patch:
            patch.setattr(smoke.os, "kill", kill)
            line = smoke.stop_run(main_ppo, ray_tmp, grace_s=2)
        assert main_ppo.wait(timeout=5) == -signal.SIGTERM
        assert f"skipped PID {foreign.pid} (python" in line and "not ours to signal" in line, line
    finally:
        for proc in (main_ppo, foreign):
            proc.kill()
            proc.wait()
