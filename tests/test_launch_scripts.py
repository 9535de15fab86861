"""The launch scripts outside SLURM: shellcheck, train_single_node.sh and ray_cluster.sh, run for real on CPU.

(scripts/slurm_train.sbatch on a real SLURM cluster: tests/test_slurm.py.)
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from spro_cluster import local_ray_env

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
SHELL_SCRIPTS = sorted([*SCRIPTS.glob("*.sh"), *SCRIPTS.glob("*.sbatch")])
TRAIN = SCRIPTS / "train_single_node.sh"
RAY_CLUSTER = SCRIPTS / "ray_cluster.sh"
SBATCH = SCRIPTS / "slurm_train.sbatch"
DEFAULT_CONFIG = "spro_fsdp2_7b"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPRO_", "SLURM_", "RAY_ADDRESS"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["SPRO_PYTHON"] = sys.executable
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


# --- static ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
    r = subprocess.run(["shellcheck", "-x", "-P", str(SCRIPTS), str(script)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_and_never_trace_or_dump_the_environment(script):
    text = script.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if script.name != "lib.sh":  # sourced, inherits the caller's options
        assert text.startswith("#!/bin/bash\n")
        assert "set -euo pipefail" in code
    assert not re.search(r"set -[a-wyz]*x|set -o xtrace|\bprintenv\b|^\s*env\s*$|\bdeclare -x\b\s*$", code, re.M)


def test_sbatch_builds_a_real_node_array_and_orders_env_check_ray():
    text = SBATCH.read_text()
    header = text.splitlines()[1:7]
    assert all(line.startswith("#SBATCH ") for line in header), header
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert 'mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")' in code
    assert '=("$nodes")' not in code  # verl #548
    steps = (
        "spro_export_env\n",
        "spro_run_preflight ",
        '"${STEP[@]}" ray start --head',
        '"${STEP[@]}" "${step[@]}"',
    )
    pos = [code.index(k) for k in steps]
    assert pos == sorted(pos), steps
    # One srun in the script (step_on), bound to --cpus-per-task, which is also what every `ray start` gets.
    assert len(re.findall(r"\bsrun ", code)) == 1 and 'STEP=(srun --nodes=1 --ntasks=1 -w "$1" --cpus-per-task=' in code
    assert 'export SPRO_RAY_NUM_CPUS="$CPUS_PER_TASK"' in code
    assert "#SBATCH --cpus-per-task=" in text and "#SBATCH --signal=B:USR1@" in text
    assert "trap cleanup EXIT" in text and "trap 'exit 143' TERM" in text


# --- train_single_node.sh --------------------------------------------------------------------------------
def test_train_dry_run_config_name_and_user_overrides_win():
    r = _run([str(TRAIN), DEFAULT_CONFIG, "trainer.nnodes=2", "+x.y=1"], _env(SPRO_DRY_RUN="1", SPRO_GPUS_PER_NODE="4"))
    assert r.returncode == 0, r.stderr
    argv = r.stdout.splitlines()
    assert argv[:3] == [sys.executable, "-m", "verl_spro.main_ppo"]  # verl's main_ppo, plugin loaded explicitly
    assert argv[3] == f"--config-path={REPO / 'configs'}" and argv[4] == f"--config-name={DEFAULT_CONFIG}"
    assert argv[5:] == ["trainer.nnodes=2", "+x.y=1", "trainer.n_gpus_per_node=4"]  # ours only where not given


def test_train_unknown_config_is_a_clear_error():
    r = _run([str(TRAIN), "no_such_config", "a=1"], _env())
    assert r.returncode != 0
    assert "no config 'no_such_config'" in r.stderr and DEFAULT_CONFIG in r.stderr


def test_train_composes_the_project_config_through_verl_main_ppo():
    """Real `python -m verl_spro.main_ppo` (verl's main_ppo): `--cfg job` prints the config it would train with."""
    if not (REPO / "configs" / f"{DEFAULT_CONFIG}.yaml").exists():
        pytest.skip(f"configs/{DEFAULT_CONFIG}.yaml not present")
    r = _run(
        [str(TRAIN), "--cfg", "job", "trainer.total_epochs=7", "algorithm.spro.beta=0.2"], _env(SPRO_GPUS_PER_NODE="4")
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load(r.stdout)
    assert cfg["algorithm"]["adv_estimator"] == "spro"
    assert cfg["algorithm"]["spro"]["beta"] == 0.2
    assert cfg["trainer"]["total_epochs"] == 7
    assert cfg["trainer"]["nnodes"] == 1 and cfg["trainer"]["n_gpus_per_node"] == 4


def test_train_with_own_config_dir_and_name(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "hydra:\n  searchpath:\n    - pkg://verl.trainer.config\n"
        "defaults:\n  - ppo_trainer\n  - _self_\n"
        "trainer:\n  total_epochs: 11\n  project_name: launch-test\n"
    )
    r = _run([str(TRAIN), "mine", "--cfg", "job", "trainer.nnodes=3"], _env(SPRO_CONFIG_DIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load(r.stdout)
    assert cfg["trainer"]["project_name"] == "launch-test" and cfg["trainer"]["total_epochs"] == 11
    assert cfg["trainer"]["nnodes"] == 3  # the user's value, not ours


def test_train_real_preflight_failure_stops_the_launch():
    """The real `verl-spro check` runs first, with the same overrides; a FAIL stops before main_ppo."""
    if shutil.which("verl-spro", path=_env()["PATH"]) is None:
        pytest.skip("verl-spro not installed")
    r = _run(
        [str(TRAIN), DEFAULT_CONFIG, "algorithm.spro.beta=0.25", "data.train_files=/nonexistent/train.parquet"],
        _env(),
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "beta=0.25" in out and "/nonexistent/train.parquet" in out  # the check saw our overrides
    assert f"preflight check failed for config '{DEFAULT_CONFIG}'" in out
    assert "training: config" not in out


# --- ray_cluster.sh ------------------------------------------------------------------------------------------
def _processes_with_env(marker: str) -> list[int]:
    needle = marker.encode() + b"\0"
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes():
                    stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if stat not in ("Z", "X"):
                        pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_ray_cluster_worker_without_head_fails_within_timeout(tmp_path):
    port = random.randint(40000, 49000)
    t0 = time.monotonic()
    r = _run(
        [str(RAY_CLUSTER), "worker", f"127.0.0.1:{port}"],
        _env(SPRO_RAY_WAIT_TIMEOUT="3", SPRO_RAY_STATE_DIR=str(tmp_path / "state")),
        timeout=60,
    )
    assert r.returncode != 0
    assert f"no Ray head answers at 127.0.0.1:{port} after 3s" in r.stderr
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_ray_cluster_head_and_worker_on_one_host():
    """Head + worker on 127.0.0.1 (distinct ports and temp dirs), wait, smoke job, a failing wait, stop."""
    base = Path(tempfile.mkdtemp(prefix="sprc", dir="/tmp"))  # short: Ray's unix socket paths
    port = random.randint(41000, 48000)
    marker = f"SPRO_RAY_STATE_DIR={base / 'state'}"
    env = _env(
        SPRO_RAY_STATE_DIR=str(base / "state"),
        SPRO_GPUS_PER_NODE="0",
        **local_ray_env(base, port, num_cpus=1, object_store_bytes=100_000_000, wait_timeout_s=90),
    )
    try:
        r = _run([str(RAY_CLUSTER), "head"], {**env, "SPRO_NODE_NAME": "alpha"})
        assert r.returncode == 0, r.stderr
        assert f"Ray head up at 127.0.0.1:{port}" in r.stderr
        r = _run([str(RAY_CLUSTER), "worker", f"127.0.0.1:{port}"], {**env, "SPRO_NODE_NAME": "beta"})
        assert r.returncode == 0, r.stderr
        assert "Ray cluster ready" in r.stdout + r.stderr

        r = _run([str(RAY_CLUSTER), "wait"], {**env, "SPRO_NNODES": "2", "SPRO_EXPECT_NODES": "alpha,beta"})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Ray cluster ready: 2 node(s) ['alpha', 'beta'], 0 GPU(s)" in r.stdout

        r = _run([str(RAY_CLUSTER), "smoke"], {**env, "SPRO_EXPECT_NODES": "alpha,beta"})
        assert r.returncode == 0, r.stdout + r.stderr
        for node in ("alpha", "beta"):
            assert re.search(rf"SMOKE node={node} .*estimator\[spro\]=registered", r.stdout), r.stdout
        assert "SMOKE OK: 2 node(s)" in r.stdout

        # A node and GPUs that never come: the wait ends on time and names what is missing.
        r = _run(
            [str(RAY_CLUSTER), "wait"],
            {
                **env,
                "SPRO_NNODES": "3",
                "SPRO_GPUS_PER_NODE": "1",
                "SPRO_EXPECT_NODES": "alpha,beta,gamma",
                "SPRO_RAY_WAIT_TIMEOUT": "4",
            },
        )
        assert r.returncode == 3, r.stdout + r.stderr
        assert "missing node(s): gamma" in r.stdout and "0/3 GPU(s) visible to Ray" in r.stdout

        r = _run([str(RAY_CLUSTER), "stop"], env)
        assert r.returncode == 0, r.stderr
        assert "stopping Ray worker node beta" in r.stderr and "stopping Ray head node alpha" in r.stderr
        deadline = time.monotonic() + 20
        while _processes_with_env(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_with_env(marker) == [], "Ray processes left after `ray_cluster.sh stop`"
    finally:
        _run([str(RAY_CLUSTER), "stop"], env)
        for pid in _processes_with_env(marker):  # only processes started with our unique state dir
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
