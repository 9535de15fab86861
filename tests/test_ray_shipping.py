"""The Ray job carries verl-spro: a Ray cluster whose worker node has verl but not verl-spro trains with spro.

`python -m verl_spro.main_ppo` puts the verl_spro package directory in the job's runtime_env `py_modules` and
`verl_spro.plugin` in its `VERL_USE_EXTERNAL_MODULES` (keeping the user's runtime_env entries), then checks every
node before verl's task runner starts. The cluster tests build a second Python environment that has exactly the
main one's packages (torch, verl, Ray...) except verl-spro, start a Ray head with the main environment and a Ray
worker with the second one through scripts/ray_cluster.sh, and run the launcher's `train` on them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
import verl.trainer.config as verl_config
from omegaconf import OmegaConf
from spro_cluster import local_ray_env, two_rank_overrides

from verl_spro import main_ppo
from verl_spro.hydra_compose import compose_trainer_config

REPO = Path(__file__).resolve().parents[1]
RAY_CLUSTER = REPO / "scripts" / "ray_cluster.sh"
PACKAGE_DIR = str(Path(main_ppo.__file__).resolve().parent)


# --- ship_plugin on verl's real Hydra config --------------------------------------------------------------------


def test_ship_plugin_adds_the_package_and_the_plugin_module_to_an_empty_runtime_env():
    config = compose_trainer_config(None, None, [])
    main_ppo.ship_plugin(config, environ={})
    runtime_env = OmegaConf.to_container(config.ray_kwargs.ray_init.runtime_env)
    assert runtime_env["py_modules"] == [PACKAGE_DIR]
    assert runtime_env["env_vars"] == {"VERL_USE_EXTERNAL_MODULES": "verl_spro.plugin"}
    assert runtime_env["py_executable"] is None  # verl's own key, untouched


def test_ship_plugin_merges_with_the_users_runtime_env_never_replaces_it():
    config = compose_trainer_config(
        None,
        None,
        [
            "+ray_kwargs.ray_init.runtime_env.py_modules=[/opt/site/mylib]",
            "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES='my.plugin,verl_spro.plugin'",
            "+ray_kwargs.ray_init.runtime_env.env_vars.HF_HOME=/data/hf",
            "+ray_kwargs.ray_init.runtime_env.pip=[einops]",
            "ray_kwargs.ray_init.runtime_env.py_executable=/opt/py/bin/python",
        ],
    )
    main_ppo.ship_plugin(config, environ={"VERL_USE_EXTERNAL_MODULES": "verl_spro.cpu_backend,my.plugin"})
    main_ppo.ship_plugin(config, environ={"VERL_USE_EXTERNAL_MODULES": "verl_spro.cpu_backend,my.plugin"})  # twice
    runtime_env = OmegaConf.to_container(config.ray_kwargs.ray_init.runtime_env)
    assert runtime_env == {
        "py_executable": "/opt/py/bin/python",
        "py_modules": ["/opt/site/mylib", PACKAGE_DIR],
        "env_vars": {
            "VERL_USE_EXTERNAL_MODULES": "my.plugin,verl_spro.plugin,verl_spro.cpu_backend",
            "HF_HOME": "/data/hf",
        },
        "pip": ["einops"],
    }


def test_ship_plugin_with_runtime_env_null():
    config = compose_trainer_config(None, None, ["ray_kwargs.ray_init.runtime_env=null"])
    main_ppo.ship_plugin(config, environ={"VERL_USE_EXTERNAL_MODULES": ""})
    runtime_env = OmegaConf.to_container(config.ray_kwargs.ray_init.runtime_env)
    assert runtime_env == {"py_modules": [PACKAGE_DIR], "env_vars": {"VERL_USE_EXTERNAL_MODULES": "verl_spro.plugin"}}


def test_verl_run_ppo_passes_the_shipped_runtime_env_to_ray_init(monkeypatch):
    """verl's own run_ppo merges what ship_plugin added over its defaults and hands it to ray.init."""
    import ray
    from verl.trainer import main_ppo as verl_main

    seen = {}

    class Stop(Exception):
        pass

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    config = compose_trainer_config(
        None, None, ["+ray_kwargs.ray_init.runtime_env.env_vars.HF_HOME=/data/hf", "algorithm.adv_estimator=grpo"]
    )
    with pytest.raises(Stop):
        main_ppo.shipping_run_ppo(verl_main.run_ppo)(config, task_runner_class=object())
    runtime_env = seen["runtime_env"]
    assert runtime_env["py_modules"] == [PACKAGE_DIR]
    assert runtime_env["env_vars"]["HF_HOME"] == "/data/hf"
    assert "verl_spro.plugin" in runtime_env["env_vars"]["VERL_USE_EXTERNAL_MODULES"].split(",")
    assert "TOKENIZERS_PARALLELISM" in runtime_env["env_vars"]  # verl's defaults are still there


def test_print_overrides_builds_model_and_task_and_leaves_ray_sizing_to_the_cluster(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "verl_spro.cli", "smoke", "--out", str(out), "--print-overrides", "trainer.save_freq=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    overrides = r.stdout.splitlines()
    assert "algorithm.adv_estimator=spro" in overrides and overrides[-1] == "trainer.save_freq=1"
    assert "trainer.save_freq=2" not in overrides  # the user's value replaces smoke's
    assert not [o for o in overrides if o.lstrip("+").startswith(("trainer.nnodes", "trainer.n_gpus_per_node"))]
    assert not [o for o in overrides if "ray_kwargs.ray_init" in o]
    assert f"actor_rollout_ref.model.path={out.resolve() / 'model'}" in overrides
    assert (out / "model" / "config.json").is_file() and (out / "data" / "train.parquet").is_file()
    assert not (out / "checkpoints").exists()


# --- a Ray cluster whose worker node lacks verl-spro --------------------------------------------------------------
def make_env_without(
    dest: Path, *, drop: tuple[str, ...] = ("verl_spro", "__editable__.verl_spro", "__editable___verl_spro")
) -> Path:
    """A virtual environment with this one's packages (symlinked, so it takes a second) minus the names in DROP."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, capture_output=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = dest / ours.relative_to(Path(sys.prefix))
    for entry in ours.iterdir():
        if not entry.name.startswith(drop):
            (theirs / entry.name).symlink_to(entry)
    ray = dest / "bin" / "ray"
    ray.write_text(f"#!{dest / 'bin' / 'python'}\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    ray.chmod(0o755)
    return dest


def _ray_cluster(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RAY_CLUSTER), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _with_env(marker: str) -> list[int]:
    """Live processes whose environment holds MARKER (this test's unique Ray state directory)."""
    needle, pids = marker.encode() + b"\0", []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "environ").read_bytes():
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def ray_pair():
    """A Ray head in this environment and, on demand, workers in other environments; all stopped by PID file."""
    base = Path(tempfile.mkdtemp(prefix="spsh", dir="/tmp"))  # short: Ray's unix socket paths
    port = random.randint(41000, 48000)
    common = {k: v for k, v in os.environ.items() if not k.startswith(("SPRO_", "SLURM_", "RAY_ADDRESS", "VERL_"))}
    common.update(local_ray_env(base, port, num_cpus=8, object_store_bytes=200_000_000, wait_timeout_s=120))
    common.update(SPRO_CPU_BACKEND="1", SPRO_TEST_MARKER=str(base))

    def env_for(python: Path, state: str, **extra: str) -> dict[str, str]:
        env = dict(common, SPRO_PYTHON=str(python), SPRO_RAY_STATE_DIR=str(base / state))
        env["PATH"] = f"{python.parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(extra)
        return env

    class Pair:
        dir = base
        address = f"127.0.0.1:{port}"

        def head(self) -> dict[str, str]:
            env = env_for(Path(sys.executable), "head", SPRO_NODE_NAME="main-env")
            r = _ray_cluster(["head"], env, base)
            assert r.returncode == 0, r.stderr
            return env

        def worker(self, python: Path, name: str) -> dict[str, str]:
            env = env_for(python, name, SPRO_NODE_NAME=name, SPRO_NODE_INDEX="1")
            r = _ray_cluster(["worker", self.address], env, base)
            assert r.returncode == 0, r.stdout + r.stderr
            return env

        def stop(self, env: dict[str, str]) -> None:
            _ray_cluster(["stop"], env, base)

    pair = Pair()
    try:
        yield pair
    finally:
        for state in sorted(base.glob("*/"), key=lambda d: d.name == "head"):  # workers first, then the head
            if (state / "head_address").exists() or list(state.glob("*.pid")):
                _ray_cluster(["stop"], dict(common, SPRO_RAY_STATE_DIR=str(state)), base)
        deadline = time.monotonic() + 20
        while _with_env(f"SPRO_TEST_MARKER={base}") and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _with_env(f"SPRO_TEST_MARKER={base}"):  # only processes started with this test's marker
            os.kill(pid, 9)
        shutil.rmtree(base, ignore_errors=True)


def _train(pair, head_env: dict[str, str], worker: str, out: Path, timeout: float = 480):
    """`ray_cluster.sh train` (verl_spro.main_ppo) on the pair: smoke's tiny model and task, 2 steps, 2 ranks."""
    overrides = two_rank_overrides(out, steps=2, resume=False)
    env = dict(
        head_env,
        SPRO_NNODES="2",
        SPRO_EXPECT_NODES=f"main-env,{worker}",
        SPRO_SKIP_CHECK="1",
        SPRO_CONFIG_DIR=str(Path(verl_config.__file__).parent),
        SPRO_CONFIG_NAME="ppo_trainer",
    )
    # verl's file logger runs in the task runner, whose environment is the job's runtime_env (not this shell's): a user
    # runtime_env entry, which ship_plugin must keep.
    overrides.append(f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={out / 'metrics.jsonl'}")
    t0 = time.monotonic()
    r = _ray_cluster(["train", *overrides], env, pair.dir, timeout=timeout)
    r.elapsed = time.monotonic() - t0
    print(f"train on main-env + {worker}: exit {r.returncode} in {r.elapsed:.0f}s")
    return r


@pytest.mark.slow
def test_spro_trains_on_a_ray_cluster_whose_worker_node_lacks_verl_spro(ray_pair, tmp_path):
    bare = make_env_without(ray_pair.dir / "env-no-spro")
    probe = subprocess.run(
        [
            str(bare / "bin" / "python"),
            "-c",
            "import verl, importlib.metadata as m; print(verl.__version__, "
            "[e.name for e in m.entry_points(group='verl.plugins')]); import verl_spro",
        ],
        cwd=ray_pair.dir,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.split()[:2] == ["0.9.1", "[]"] and "No module named 'verl_spro'" in probe.stderr, probe

    head_env = ray_pair.head()
    ray_pair.worker(bare / "bin" / "python", "no-spro")
    out = tmp_path / "run"
    r = _train(ray_pair, head_env, "no-spro", out)
    output = r.stdout + r.stderr
    assert r.returncode == 0, output[-6000:]
    # In a Ray worker on the node without verl-spro, verl loaded the copy the job shipped (runtime_env py_modules).
    shipped = re.search(r"verl-spro: Ray node no-spro \([\d.]+\): verl 0\.9\.1, verl-spro from (\S+)", output)
    assert shipped and "/runtime_resources/py_modules_files/" in shipped.group(1), output[-6000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[1]["data"]["spro/msa_abs_mean"] > 0
    # One logical GPU per node and an FSDP world of 2: rank 1 ran on the node without verl-spro.
    shards = sorted(p.name for p in (out / "checkpoints" / "global_step_2" / "actor").glob("model_world_size_*"))
    assert shards == ["model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"]


@pytest.mark.slow
def test_a_node_whose_verl_is_unsupported_stops_the_run_before_the_rollout_naming_it(ray_pair, tmp_path):
    old = make_env_without(ray_pair.dir / "env-old-verl", drop=("verl_spro", "__editable__", "verl"))
    purelib = old / Path(sysconfig.get_paths()["purelib"]).relative_to(Path(sys.prefix))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():  # verl's metadata and the like, symlinked
        if entry.name.startswith("verl") and entry.name != "verl" and not entry.name.startswith("verl_spro"):
            (purelib / entry.name).symlink_to(entry)
    shutil.copytree(Path(verl_config.__file__).parents[2], purelib / "verl", symlinks=True)
    (purelib / "verl" / "version" / "version").write_text("0.8.0\n")

    head_env = ray_pair.head()
    ray_pair.worker(old / "bin" / "python", "old-verl")
    out = tmp_path / "run"
    r = _train(ray_pair, head_env, "old-verl", out, timeout=300)
    output = r.stdout + r.stderr
    assert r.returncode == 2, output[-6000:]
    line = re.compile(
        r"verl-spro: Ray node old-verl \([\d.]+\): adv_estimator=spro cannot run: verl 0\.8\.0 is not supported by "
        r"verl-spro \(supported: verl>=0\.9\.1,<0\.10\); install a supported verl or use another estimator; stopping "
        r"before the rollout"
    )
    assert [x for x in r.stderr.splitlines() if line.fullmatch(x)], r.stderr[-4000:]
    assert "WorkerDict" not in output and not (out / "metrics.jsonl").exists()  # no worker, no rollout, no step
    assert r.elapsed < 150, f"{r.elapsed:.0f}s: not an early stop"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ray_kwargs.ray_init.runtime_env=oops", "ray_kwargs.ray_init.runtime_env must be a mapping, got 'oops'"),
        (
            "+ray_kwargs.ray_init.runtime_env.py_modules=/opt/lib",
            "runtime_env.py_modules must be a list, got '/opt/lib'",
        ),
        ("+ray_kwargs.ray_init.runtime_env.env_vars=[A]", "runtime_env.env_vars must be a mapping, got ['A']"),
    ],
)
def test_ship_plugin_refuses_a_runtime_env_it_would_have_to_replace(override, message):
    config = compose_trainer_config(None, None, [override])
    before = OmegaConf.to_container(config.ray_kwargs.ray_init)
    with pytest.raises(main_ppo._Refused, match=re.escape(message)):
        main_ppo.ship_plugin(config, environ={})
    assert OmegaConf.to_container(config.ray_kwargs.ray_init) == before  # nothing of the user's was touched
