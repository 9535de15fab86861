"""main_ppo never waits forever for resources, and refuses a config in one line printed last (verl_spro.resources,
verl_spro.main_ppo): demand from verl's real composed configs, the bounded wait, and real main_ppo runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from verl_spro.hydra_compose import REPO_CONFIG_DIR, compose_trainer_config
from verl_spro.resources import (
    DEFAULT_WAIT_S,
    WAIT_ENV,
    ClusterCapacity,
    check_cluster,
    cluster_capacity,
    resource_demand,
    shortage,
)

REPO = Path(__file__).resolve().parents[1]


def _demand(name: str, *overrides: str):
    return resource_demand(compose_trainer_config(REPO_CONFIG_DIR, name, list(overrides)))


def test_demand_of_the_project_configs_counts_gpus_and_the_cpus_verl_places():
    one_node = _demand("spro_megatron_7b")
    assert one_node.pools == {"global_pool": [8]}
    assert one_node.cpus_per_gpu == 3  # verl's ResourcePoolManager.max_colocate_count
    assert one_node.other_cpus == 1 + 8  # V1: TransferQueue controller + 8 SimpleStorage units (verl's default)
    assert one_node.cpus == 8 * 3 + 9
    four_nodes = _demand("spro_megatron_32b_4node")
    assert four_nodes.pools == {"global_pool": [8, 8, 8, 8]} and four_nodes.largest_node == 8
    legacy = _demand("spro_fsdp2_7b", "trainer.use_v1=false")
    assert legacy.other_cpus == 0  # no TransferQueue in the legacy trainer
    reward_pool = _demand(
        "spro_fsdp2_7b",
        "reward.reward_model.enable_resource_pool=true",
        "reward.reward_model.nnodes=1",
        "reward.reward_model.n_gpus_per_node=2",
    )
    assert reward_pool.pools == {"global_pool": [8], "reward_pool": [2]} and reward_pool.gpus == 10


def _capacity(gpus: list[float], cpus: float) -> ClusterCapacity:
    return ClusterCapacity(gpus_per_node=gpus, cpus=cpus, resource="GPU")


def test_shortage_names_what_is_missing_and_accepts_what_fits():
    demand = _demand("spro_megatron_32b_4node")
    assert shortage(demand, _capacity([8, 8, 8, 8], 4 * 64)) is None
    assert "asks for 32 GPUs" in shortage(demand, _capacity([8, 8, 8], 3 * 64))
    assert "32 GPUs" in shortage(demand, _capacity([0], 2))
    # Enough GPUs in all, but no node with 8: STRICT_PACK bundles of one node would never be placed.
    assert "8 GPUs on one node" in shortage(demand, _capacity([4] * 8, 8 * 64))
    assert "at least 105 CPUs" in shortage(demand, _capacity([8, 8, 8, 8], 4 * 16))
    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 8.0}},
        {"Alive": False, "Resources": {"CPU": 16.0, "GPU": 8.0}},
        {"Alive": True, "Resources": {"CPU": 4.0}},
    ]
    assert cluster_capacity(nodes, "GPU") == _capacity([8.0, 0.0], 20.0)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_cluster_this_run_started_is_refused_at_once_naming_both_sides():
    clock, said = _Clock(), []
    reason = check_cluster(
        _demand("spro_megatron_7b"),
        lambda: _capacity([0], 2),
        True,
        "10.0.0.1:6379",
        {},
        said.append,
        clock,
        clock.sleep,
    )
    assert clock.now == 0 and said == []
    assert reason.startswith("verl-spro: the config asks for 8 GPUs (global_pool: trainer.nnodes=1 x trainer.n_gpus_")
    assert "the Ray cluster at 10.0.0.1:6379 has 0 GPUs (0 per node) and 2 CPUs on 1 node" in reason
    assert "\n" not in reason


def test_a_connected_cluster_gets_a_bounded_wait_with_messages_then_a_refusal():
    clock, said = _Clock(), []
    demand = _demand("spro_megatron_32b_4node")
    reason = check_cluster(
        demand, lambda: _capacity([8, 8], 128), False, "head:6379", {WAIT_ENV: "60"}, said.append, clock, clock.sleep
    )
    assert 60 <= clock.now < 66
    assert len(said) == 2 and all("waiting for the Ray cluster at head:6379" in line for line in said)
    assert "gave up after 60 s" in reason and "16 GPUs (8/8 per node)" in reason

    # Nodes joining during the wait: the run goes on as soon as the cluster holds the demand.
    clock, said = _Clock(), []
    joined = lambda: _capacity([8] * min(4, 1 + int(clock.now // 10)), 64 * 4)  # noqa: E731
    assert check_cluster(demand, joined, False, "head:6379", {}, said.append, clock, clock.sleep) is None
    assert 30 <= clock.now < DEFAULT_WAIT_S and len(said) == 1


@pytest.mark.parametrize("bad", ["-1", "nan", "soon"])
def test_a_bad_wait_setting_is_refused_naming_the_variable(bad):
    with pytest.raises(ValueError, match=WAIT_ENV):
        check_cluster(_demand("spro_megatron_7b"), lambda: _capacity([0], 2), False, "a:1", {WAIT_ENV: bad})


@pytest.fixture
def short_tmp():
    """A short folder: Ray's unix sockets live under RAY_TMPDIR, and their paths may not exceed 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="spro-res-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _main_ppo(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HYDRA_", "VERL_"))}
    env["RAY_TMPDIR"] = str(tmp_path / "ray")
    (tmp_path / "ray").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "verl_spro.main_ppo", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _processes_under(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(path) in cmdline or f"RAY_TMPDIR={path / 'ray'}".encode() in environ:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_gpu_config_on_this_cpu_ray_cluster_stops_in_one_line_leaving_nothing_running(short_tmp):
    """The issue's hang: spro_megatron_7b (8 GPUs) under a local Ray on a CPU machine waited forever."""
    start = time.monotonic()
    tmp_path = short_tmp
    r = _main_ppo(tmp_path, f"--config-path={REPO_CONFIG_DIR}", "--config-name=spro_megatron_7b", timeout=120)
    took = time.monotonic() - start
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert took < 60
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("verl-spro: the config asks for 8 GPUs (global_pool: trainer.nnodes=1 x trainer.n_gpus_")
    assert "the Ray cluster at" in last and "this machine's Ray cluster, started by this run, will not grow" in last
    assert "No supported accelerator detected" in r.stderr  # verl's CPU-only notice matters here: it stays
    deadline = time.monotonic() + 15
    while _processes_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_under(tmp_path) == []


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            ["algorithm.adv_estimator=spro", "actor_rollout_ref.rollout.n=1"],
            "actor_rollout_ref.rollout.n=1: every advantage would be 0",
        ),
        (["data.train_batch_size=-3"], "AssertionError: real_train_batch_size (-3) must be divisible"),  # verl's own
        (["algorithm.spro.bta=1"], "Could not override 'algorithm.spro.bta'. To append to your config use +algorithm"),
    ],
    ids=["spro-n1", "verl-assert", "hydra-typo"],
)
def test_a_config_refused_at_validation_prints_its_reason_last_without_a_traceback(tmp_path, overrides, reason):
    r = _main_ppo(tmp_path, *overrides, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("verl-spro: main_ppo refused the config before Ray started: ") and reason in last
    assert "Traceback" not in r.stderr and "Error executing job" not in r.stderr
