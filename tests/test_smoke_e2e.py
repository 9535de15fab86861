"""`verl-spro smoke`: verl's real main_ppo, end to end on the CPU, through `verl_spro.cpu_backend`.

The slow tests run the real subprocesses (V1 and legacy trainers, spro and grpo, a checkpoint resume); each run is a
module-scoped fixture that several tests read. The fast tests cover option validation and the backend's
registration (including the private verl name it writes to).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from verl_spro.cli import main
from verl_spro.smoke import (
    CPU_BACKEND,
    CPU_ROLLOUT,
    compute_score,
    merge_overrides,
    progress_line,
)

SMOKE_TIMEOUT_S = 1200
ADVANTAGE_KEYS = ("critic/advantages/mean", "critic/advantages/max", "critic/advantages/min")


def _smoke(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "verl_spro.cli", "smoke", "--out", str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False)


def _metrics(out: Path) -> dict[int, dict[str, Any]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {record["step"]: record["data"] for record in records}


def _ok(result: subprocess.CompletedProcess[str], out: Path) -> None:
    log = out / "main_ppo.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
    assert result.returncode == 0, f"smoke exited {result.returncode}\n{result.stdout}\n{result.stderr}\n{tail}"


class Run:
    """One finished smoke run: its stdout, metrics by step and main_ppo log, read before anything reuses OUT."""

    def __init__(self, out: Path, result: subprocess.CompletedProcess[str]) -> None:
        _ok(result, out)
        self.out = out
        self.stdout = result.stdout
        self.metrics = _metrics(out)
        self.log = (out / "main_ppo.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def v1_spro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    """V1 trainer, spro: 2 steps, then ``--steps 3 --resume`` on the same OUT."""
    out = tmp_path_factory.mktemp("v1_spro")
    first = Run(out, _smoke(out, "--steps", "2"))
    resumed = Run(out, _smoke(out, "--steps", "3", "--resume"))
    return first, resumed


@pytest.fixture(scope="module")
def legacy_spro(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("legacy_spro")
    return Run(out, _smoke(out, "--steps", "2", "--trainer", "legacy"))


@pytest.fixture(scope="module")
def v1_grpo(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("v1_grpo")
    return Run(out, _smoke(out, "--steps", "2", "--estimator", "grpo"))


@pytest.fixture(scope="module")
def v1_spro_beta0(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("v1_spro_beta0")
    return Run(out, _smoke(out, "--steps", "2", "+algorithm.spro.beta=0"))


def _check_spro_run(run: Run) -> None:
    assert sorted(run.metrics) == [1, 2]
    for step, data in run.metrics.items():
        for key in ("spro/msa_abs_mean", "spro/process_to_outcome", "critic/advantages/mean", "timing_s/ref"):
            assert key in data, f"step {step}: no {key}"
        assert "actor/kl_loss" not in data, f"step {step}: a KL loss was computed"
        assert data["timing_s/ref"] > 0
    # Policy == reference at step 1, by construction; lr 1e-2 moves it off by step 2.
    assert run.metrics[1]["spro/msa_abs_mean"] == 0.0
    assert run.metrics[2]["spro/msa_abs_mean"] > 0.0
    # The partial-credit reward varies inside groups, so the advantages are not all zero.
    assert run.metrics[1]["critic/advantages/max"] > 0.0 > run.metrics[1]["critic/advantages/min"]
    # One progress line per step, instead of verl's config dump.
    assert [line.split("/")[0] for line in run.stdout.splitlines() if line.startswith("step ")] == ["step 1", "step 2"]
    assert "'actor_rollout_ref'" not in run.stdout
    # What main_ppo is doing before the first step, read from its log.
    lines = run.stdout.splitlines()
    before_first_step = lines[: next(i for i, line in enumerate(lines) if line.startswith("step "))]
    assert any(line.startswith("verl-spro smoke: Ray up; ") for line in before_first_step), run.stdout
    # The reference model was built: its (forward-only) engine took the CPU offload policy.
    from verl_spro.cpu_backend import OFFLOAD_LOG_LINE

    assert OFFLOAD_LOG_LINE in run.log


@pytest.mark.slow
def test_v1_spro_two_steps(v1_spro: tuple[Run, Run]) -> None:
    _check_spro_run(v1_spro[0])


@pytest.mark.slow
def test_legacy_spro_two_steps(legacy_spro: Run) -> None:
    _check_spro_run(legacy_spro)


@pytest.mark.slow
def test_resume_appends_the_next_step_to_the_history(v1_spro: tuple[Run, Run]) -> None:
    first, resumed = v1_spro
    checkpoints = first.out / "checkpoints"
    assert (checkpoints / "global_step_2").is_dir() and (checkpoints / "global_step_3").is_dir()
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    # metrics.jsonl and main_ppo.log keep the first run's steps and add the resumed one's
    assert sorted(resumed.metrics) == [1, 2, 3]
    assert {step: resumed.metrics[step] for step in (1, 2)} == first.metrics
    assert resumed.log.startswith(first.log) and "smoke --resume" in resumed.log[len(first.log) :]
    assert [line.split("/")[0] for line in resumed.stdout.splitlines() if line.startswith("step ")] == ["step 3"]
    # the last line says where the checkpoint is
    assert first.stdout.strip().splitlines()[-1].endswith(f"checkpoint: {checkpoints.resolve() / 'global_step_2'}")
    assert resumed.stdout.strip().splitlines()[-1].endswith(f"checkpoint: {checkpoints.resolve() / 'global_step_3'}")
    assert "spro/msa_abs_mean" in resumed.metrics[3] and "timing_s/ref" in resumed.metrics[3]
    # The resumed run starts from the trained step-2 policy, not from the reference.
    assert resumed.metrics[3]["spro/msa_abs_mean"] > 0.0


@pytest.mark.slow
def test_grpo_builds_no_reference_model(v1_grpo: Run) -> None:
    assert sorted(v1_grpo.metrics) == [1, 2]
    for step, data in v1_grpo.metrics.items():
        assert not [k for k in data if k.startswith("spro/")], f"step {step}: spro metrics in a grpo run"
        assert "timing_s/ref" not in data and "actor/kl_loss" not in data
        assert "critic/advantages/mean" in data
    from verl_spro.cpu_backend import OFFLOAD_LOG_LINE

    assert OFFLOAD_LOG_LINE not in v1_grpo.log


@pytest.mark.slow
def test_spro_beta0_matches_grpo(v1_spro_beta0: Run, v1_grpo: Run) -> None:
    """Same seed: the same sampled tokens and rewards, and the same advantages up to float32 rounding.

    Not bitwise: verl's async agent loop delivers a prompt's n requests to the rollout server in varying order, so
    which of the n slots gets which (seeded) sample varies, and float32 reductions over the batch differ in the last
    bits.
    """
    for step in (1, 2):
        spro, grpo = v1_spro_beta0.metrics[step], v1_grpo.metrics[step]
        assert spro["spro/beta"] == 0.0 and spro["spro/msa_abs_mean"] == 0.0
        for key in (*ADVANTAGE_KEYS, "critic/score/max", "critic/score/min", "critic/score/mean"):
            assert math.isclose(spro[key], grpo[key], rel_tol=1e-5, abs_tol=1e-6), (step, key, spro[key], grpo[key])


def _run_processes_of(out: Path) -> list[int]:
    """Live processes of the smoke run into ``out``: their environment names its verl metrics file exactly."""
    from verl_spro.smoke import VERL_METRICS

    needle = f"VERL_FILE_LOGGER_PATH={out.resolve() / VERL_METRICS}".encode()
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_ctrl_c_stops_every_process_of_the_run_even_when_sigint_was_ignored(tmp_path: Path) -> None:
    """Started as a background job is (SIGINT ignored, inherited), smoke still takes SIGINT: once Ray and the
    workers are up, it stops them all within seconds, says so, and exits 130."""
    import signal
    import time

    out = tmp_path / "o"
    command = [sys.executable, "-m", "verl_spro.cli", "smoke", "--out", str(out), "--steps", "2"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.time() + 300
        while len(_run_processes_of(out)) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
        started = _run_processes_of(out)
        assert len(started) >= 3, f"main_ppo and Ray did not come up: {proc.poll()} {started}"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted; stopping main_ppo" in stderr and "stopped" in stderr.splitlines()[-1], stderr
    time.sleep(2)
    assert not _run_processes_of(out), "processes of the run outlived it"


def test_sigterm_before_main_ppo_starts_exits_143(tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "verl_spro.cli", "smoke", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "smoke_run.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)  # validated and locked: the model is being built
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == "verl-spro smoke: stopped by SIGTERM before main_ppo started"


# ------------------------------------------------------------------------------------------------ fast tests


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors (bad --steps, --trainer)
        return int(exc.code or 0)


def test_validation_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = str(tmp_path / "o")
    cases = [
        (["--out", out, "--steps", "0"], "--steps must be >= 1"),
        (["--out", out, "--steps", "-1"], "--steps must be >= 1"),
        (["--out", str(a_file)], "exists and is not a directory"),
        (["--out", str(a_file / "sub")], "ot a directory"),
        (["--out", out, "--resume", "--steps", "3"], "--resume: no checkpoint"),
        (["--out", out, "not_an_override"], "expected key=value"),
        (["--out", out, "--trainer", "v2"], "invalid choice"),
        (["--out", out, "--estimator", "ppo"], "invalid choice"),
        (["--out", out, "--seed", str(2**70)], "--seed must be <="),
        (["--out", out, "--seed", "-1"], "--seed must be >= 0"),
    ]
    for argv, message in cases:
        assert _exit_code(["smoke", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err
        assert [line for line in err.splitlines() if "error" in line] == [err.strip().splitlines()[-1]], err
    assert not (tmp_path / "o").exists(), "a refused run must not create --out"


def test_resume_needs_steps_above_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "global_step_2").mkdir(parents=True)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("2")
    assert main(["smoke", "--out", str(tmp_path), "--resume", "--steps", "2"]) == 2
    assert "at step 2; --steps must be above it" in capsys.readouterr().err


def test_a_main_ppo_that_fails_by_itself_says_why(tmp_path: Path) -> None:
    """A bad override fails in main_ppo's Hydra (exit 1, before Ray): the user sees verl's reason, not silence."""
    result = _smoke(tmp_path / "o", "trainer.no_such_key=1")
    assert result.returncode == 1
    assert "main_ppo exited with code 1" in result.stderr
    assert "Could not override 'trainer.no_such_key'" in result.stderr


@pytest.mark.parametrize("tracker", ["2", None, "not a number", "9"])
def test_an_out_holding_checkpoints_is_not_wiped_without_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tracker: str | None
) -> None:
    """Whatever verl's tracker file says (a step, nothing: missing, garbage, a step without its folder), an OUT
    with checkpoints is refused without --resume/--fresh and left as it was."""
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "global_step_2" / "actor").mkdir(parents=True)
    (checkpoints / "global_step_2" / "actor" / "model.pt").write_text("weights")
    if tracker is not None:
        (checkpoints / "latest_checkpointed_iteration.txt").write_text(tracker)
    assert main(["smoke", "--out", str(tmp_path), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run (checkpoints)" in err and "--fresh" in err and "--resume" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (checkpoints / "global_step_2" / "actor" / "model.pt").read_text() == "weights"
    assert main(["smoke", "--out", str(tmp_path), "--resume", "--fresh", "--steps", "3"]) == 2
    assert "contradict" in capsys.readouterr().err
    if tracker != "2":  # no checkpoint verl can resume: --resume says so instead of starting over
        assert main(["smoke", "--out", str(tmp_path), "--resume", "--steps", "3"]) == 2
        assert "no checkpoint verl can resume" in capsys.readouterr().err
        assert (checkpoints / "global_step_2" / "actor" / "model.pt").is_file()


def _checkpointed_out(out: Path, **made_with: object) -> Path:
    (out / "checkpoints" / "global_step_2").mkdir(parents=True)
    (out / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("2")
    if made_with:
        (out / "smoke_run.json").write_text(json.dumps(made_with))
    return out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--estimator", "grpo", "--estimator spro (not grpo)"),
        ("--trainer", "legacy", "--trainer v1 (not legacy)"),
        ("--seed", "1", "--seed 0 (not 1)"),
    ],
)
def test_resume_refuses_another_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    out = _checkpointed_out(tmp_path, estimator="spro", trainer="v1", seed=0)
    assert main(["smoke", "--out", str(out), "--resume", "--steps", "3", option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_resume_without_a_record_of_the_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _checkpointed_out(tmp_path)
    assert main(["smoke", "--out", str(out), "--resume", "--steps", "3"]) == 2
    assert "smoke_run.json is missing or unreadable" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a=b", "a,b", "caf\u00e9", "a#b"])
def test_an_out_hydra_cannot_take_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    out = tmp_path / name
    assert main(["smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Hydra cannot take the path" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RAY_ADDRESS", "10.0.0.1:6379", "RAY_ADDRESS=10.0.0.1:6379 is exported"),
        ("VERL_USE_EXTERNAL_PLUGINS", "none", "keeps verl from loading verl-spro"),
    ],
)
def test_an_environment_main_ppo_would_fail_in_is_refused_up_front(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_second_run_into_the_same_out_is_refused_by_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from verl_spro.output_files import OutDirLock

    out = tmp_path / "o"
    out.mkdir()
    first = OutDirLock(out)  # a running smoke holds it (another open file: flock refuses it like another process)
    try:
        assert main(["smoke", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"another run is writing there (PID {os.getpid()}" in err and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in out.iterdir()) == [".verl-spro.lock"], "the refused run wrote into OUT"
    finally:
        first.release()


def test_user_overrides_replace_defaults() -> None:
    merged = merge_overrides(["a.b=1", "+c.d=2", "e=3"], ["a.b=9", "c.d=8"])
    assert merged == ["e=3", "a.b=9", "c.d=8"]


def test_reward_gives_partial_credit() -> None:
    assert compute_score("s", "7", "7") == 1.0
    assert compute_score("s", "", "7") == 0.0
    assert compute_score("s", "ab", "7") == 0.0
    assert compute_score("s", "1a", "7") == 0.25
    assert compute_score("s", "12", "7") == 0.5


def test_progress_line() -> None:
    record = {"step": 2, "data": {"critic/score/mean": 0.25, "spro/msa_abs_mean": 0.0125, "timing_s/step": 3.21}}
    assert progress_line(record, 5) == "step 2/5  reward 0.250  spro/msa_abs_mean 0.0125  3.2 s"
    assert "spro/msa_abs_mean -" in progress_line({"step": 1, "data": {}}, 1)


def _python(code: str, **env: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (verl's registries are process-global); it prints one JSON line."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_REGISTRIES = """
    import json, sys
    {prelude}
    import verl
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.workers.rollout import base, replica
    from verl.workers.engine.base import EngineRegistry
    import verl.workers.engine.fsdp.transformer_impl as fsdp
    import verl.utils.distributed as dist
    import verl.workers.engine_workers as workers
    print(json.dumps({{
        "backend_imported": "verl_spro.cpu_backend" in sys.modules,
        "plugin_imported": "verl_spro.plugin" in sys.modules,
        "platforms": sorted(PlatformRegistry.registered_names()),
        "device": get_platform().device_name,
        "adapters": sorted(name for name, _ in base._ROLLOUT_REGISTRY),
        "replicas": sorted(replica.RolloutReplicaRegistry._registry),
        "fsdp_devices": sorted(EngineRegistry._engines["language_model"]["fsdp2"]),
        "offload_policy": fsdp.CPUOffloadPolicy.__module__,
        "process_group_patched": [
            hasattr(m.initialize_global_process_group_ray, "__verl_spro_cpu_backend__") for m in (dist, workers)
        ],
        "cpu_offload_pin": fsdp.CPUOffloadPolicy(pin_memory=True).pin_memory,
    }}))
"""


def test_installed_plugin_leaves_verl_untouched() -> None:
    """verl-spro installed, backend not enabled: verl's platform, rollout and engine registries are stock."""
    env = {"VERL_USE_EXTERNAL_MODULES": ""}
    state = _python(_REGISTRIES.format(prelude=""), **env)
    assert not state["backend_imported"]
    assert CPU_ROLLOUT not in state["adapters"] and CPU_ROLLOUT not in state["replicas"]
    assert "cpu" not in state["platforms"] and state["device"] != "cpu"
    assert "cpu" not in state["fsdp_devices"]
    assert state["offload_policy"].startswith("torch.")
    assert state["process_group_patched"] == [False, False]
    assert state["cpu_offload_pin"] is True


def test_backend_registers_through_verl_external_modules() -> None:
    """``VERL_USE_EXTERNAL_MODULES=verl_spro.cpu_backend``: every registration the CPU route needs is in place.

    This also covers the one private verl name the backend writes (``verl.workers.rollout.base._ROLLOUT_REGISTRY``):
    ``get_rollout_class`` must resolve the adapter through it.
    """
    state = _python(_REGISTRIES.format(prelude=""), VERL_USE_EXTERNAL_MODULES=CPU_BACKEND)
    assert state["backend_imported"] and state["plugin_imported"]
    assert "cpu" in state["platforms"] and state["device"] == "cpu"
    assert CPU_ROLLOUT in state["adapters"] and CPU_ROLLOUT in state["replicas"]
    assert "cpu" in state["fsdp_devices"]
    assert state["process_group_patched"] == [True, True]
    assert state["cpu_offload_pin"] is False


def test_rollout_classes_resolve_through_verl() -> None:
    code = """
        import json
        import verl
        from verl.workers.rollout.base import BaseRollout, get_rollout_class
        from verl.workers.rollout.replica import RolloutReplica, get_rollout_replica_class
        from verl_spro.cpu_backend import ROLLOUT_NAME
        adapter, replica = get_rollout_class(ROLLOUT_NAME, "async"), get_rollout_replica_class(ROLLOUT_NAME)
        print(json.dumps({"name": ROLLOUT_NAME, "adapter": issubclass(adapter, BaseRollout),
                          "replica": issubclass(replica, RolloutReplica)}))
    """
    state = _python(code, VERL_USE_EXTERNAL_MODULES=CPU_BACKEND)
    assert state == {"name": CPU_ROLLOUT, "adapter": True, "replica": True}


def test_sampling_log_probs_are_the_tempered_ones() -> None:
    import torch

    from verl_spro.cpu_backend.rollout import sample_token

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    generator = torch.Generator().manual_seed(0)
    token, log_prob = sample_token(logits, 0.7, -1, 1.0, generator)
    assert math.isclose(log_prob, float(torch.log_softmax(logits / 0.7, -1)[token]), rel_tol=1e-6)
    greedy, _ = sample_token(logits, 0.0, -1, 1.0, generator)
    assert greedy == 0
    # top-k 1 always picks the argmax, whatever the temperature.
    assert {sample_token(logits, 5.0, 1, 1.0, generator)[0] for _ in range(20)} == {0}
    # top-p 0.5 keeps only the most likely token here (p = 0.64 at temperature 1).
    assert {sample_token(logits, 1.0, -1, 0.5, generator)[0] for _ in range(20)} == {0}


def test_smoke_command_registered() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "verl_spro.cli", "smoke", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--resume" in result.stdout
