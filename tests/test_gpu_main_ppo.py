"""Two real SPRO steps of ``python -m verl.trainer.main_ppo`` on one GPU (vLLM rollout, FSDP2 actor and ref).

Needs a CUDA device, vLLM, and a small causal LM on local disk (no hub access is assumed):
``SPRO_TEST_MODEL=/path/to/Qwen2.5-0.5B-Instruct pytest -m gpu tests/test_gpu_main_ppo.py``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl_spro import data_prep
from verl_spro.hydra_compose import REPO_CONFIG_DIR

MODEL_ENV = "SPRO_TEST_MODEL"


def _skip_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA device"
    if importlib.util.find_spec("vllm") is None:
        return "needs vLLM (pip install 'verl-spro[vllm]')"
    model = os.environ.get(MODEL_ENV)
    if not model:
        return f"set {MODEL_ENV} to a local directory holding a small HF causal LM (e.g. Qwen2.5-0.5B-Instruct)"
    if not os.path.isfile(os.path.join(model, "config.json")):
        return f"{MODEL_ENV}={model} is not a local model directory (no config.json)"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _write_gsm8k_like(path: Path, count: int) -> None:
    rows = [data_prep.convert_row({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}) for i in range(count)]
    for i, row in enumerate(rows):
        row["extra_info"].update(split=path.stem, index=i, source_file="generated", source_line=i + 1)
    data_prep.write_parquet(rows, str(path))


def test_two_spro_steps_on_one_gpu(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    _write_gsm8k_like(train, 32)
    _write_gsm8k_like(val, 8)
    overrides = [
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"actor_rollout_ref.model.path={os.environ[MODEL_ENV]}",
        "data.train_batch_size=4",
        "data.max_prompt_length=128",
        "data.max_response_length=64",
        "data.dataloader_num_workers=0",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
        "actor_rollout_ref.rollout.enforce_eager=true",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.total_training_steps=2",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.resume_mode=disable",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "trainer.logger=[console]",
        "ray_kwargs.ray_init.num_cpus=8",
    ]
    cmd = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={REPO_CONFIG_DIR}",
        "--config-name=spro_fsdp2_7b",
        *overrides,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    # The console logger prints one `step:N - key:value - ...` line per step; SPRO's metrics must be in it.
    step_lines = [line for line in log.splitlines() if "step:" in line and "spro/" in line]
    assert len(step_lines) >= 2, log[-8000:]
    assert "step:2" in step_lines[-1]
    for metric in ("spro/", "actor/entropy", "response_length/mean"):
        assert metric in step_lines[-1], metric
