"""With only ``algorithm.adv_estimator=spro``, every verl trainer builds the reference policy, with no KL term.

Checked on verl's Hydra tree and on the functions each trainer really calls (each imported ``need_reference_policy``
by name), and on ``main_ppo`` itself, which must stop before Ray starts when SPRO's config is wrong.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from omegaconf import open_dict
from verl.trainer.ppo.utils import Role

from verl_spro.config import SproConfigError
from verl_spro.hydra_compose import compose_trainer_config

# Modules that import need_reference_policy by name and decide with it (VERL_NOTES.md; checked in verl 0.9.1).
DECIDERS = [
    "verl.trainer.main_ppo",
    "verl.trainer.main_ppo_v0",
    "verl.trainer.ppo.ray_trainer",
    "verl.trainer.ppo.v1.trainer_base",
    "verl.experimental.fully_async_policy.fully_async_trainer",
    "verl.experimental.one_step_off_policy.ray_trainer",
    "verl.experimental.one_step_off_policy.main_ppo",
    "verl.experimental.separation.utils",
]

# What verl's validate_config needs on any estimator (micro-batches), the rollout engine's name, and a group size.
RUNNABLE = [
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
]


def spro_config(*overrides: str):
    return compose_trainer_config(None, None, ["algorithm.adv_estimator=spro", *overrides])


@pytest.mark.parametrize("module_name", DECIDERS)
def test_every_trainer_decides_to_build_the_reference_policy(module_name: str) -> None:
    config = spro_config()
    assert config.actor_rollout_ref.actor.use_kl_loss is False
    assert config.algorithm.use_kl_in_reward is False
    module = importlib.import_module(module_name)
    assert module.need_reference_policy(config) is True
    with open_dict(config):
        config.algorithm.adv_estimator = "grpo"
    assert module.need_reference_policy(config) is False  # the hook only answers for spro


@pytest.mark.parametrize(
    ("overrides", "expected_role"),
    [
        ([], Role.ActorRolloutRef),  # hybrid engine: actor, rollout and reference in one colocated worker
        (["actor_rollout_ref.model.lora.rank=8"], Role.ActorRollout),  # ref_in_actor: the actor minus its adapter
    ],
)
def test_v1_trainer_colocates_the_reference_in_the_hybrid_engine(overrides: list[str], expected_role: Role) -> None:
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    trainer = PPOTrainerSync.__new__(PPOTrainerSync)  # only the role/resource decision is exercised
    trainer.config = spro_config(*overrides)
    trainer._init_resource_pool_mgr()
    assert set(trainer.role_worker_mapping) == {expected_role}
    assert trainer.mapping[expected_role] == "global_pool"
    assert Role.RefPolicy not in trainer.role_worker_mapping  # no separate ref worker group


@pytest.mark.parametrize("engine", ["dp", "megatron"])
def test_verls_validation_passes_for_both_engines(engine: str) -> None:
    from verl.trainer import main_ppo

    config = spro_config(f"model_engine={engine}", *RUNNABLE)
    assert config.actor_rollout_ref.actor.strategy == ("megatron" if engine == "megatron" else "fsdp")
    main_ppo.validate_config(config, use_reference_policy=main_ppo.need_reference_policy(config), use_critic=False)


def test_validation_names_the_reference_micro_batch_key_when_missing() -> None:
    from verl.trainer import main_ppo

    config = spro_config(*RUNNABLE[:4])
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.ref\.log_prob_micro_batch_size_per_gpu"):
        main_ppo.validate_config(config, use_reference_policy=main_ppo.need_reference_policy(config), use_critic=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+algorithm.spro.bta=0.1", r"unknown key algorithm\.spro\.bta: did you mean algorithm\.spro\.beta\?"),
        ("+algorithm.spro.beta=-1", r"algorithm\.spro\.beta must be finite and >= 0"),
    ],
)
def test_validation_checks_spro_keys(override: str, message: str) -> None:
    from verl.trainer import main_ppo

    config = spro_config(override, *RUNNABLE)
    with pytest.raises(SproConfigError, match=message):
        main_ppo.validate_config(config, use_reference_policy=True, use_critic=False)


def test_validation_refuses_spro_without_a_reference_policy() -> None:
    """What main_ppo would be told if the need_reference_policy hook were not in effect in the driver."""
    from verl.trainer import main_ppo

    config = spro_config(*RUNNABLE)
    with pytest.raises(SproConfigError, match=r"use_kl_loss=true actor_rollout_ref\.actor\.kl_loss_coef=0\.0"):
        main_ppo.validate_config(config, use_reference_policy=False, use_critic=False)


def test_validation_of_bypass_mode_needs_rollout_log_probs() -> None:
    from verl.trainer import main_ppo

    config = spro_config(
        *RUNNABLE,
        "algorithm.rollout_correction.bypass_mode=true",
        "actor_rollout_ref.rollout.calculate_log_probs=false",
    )
    with pytest.raises(SproConfigError, match=r"actor_rollout_ref\.rollout\.calculate_log_probs=true"):
        main_ppo.validate_config(config, use_reference_policy=True, use_critic=False)


def test_main_ppo_stops_before_ray_on_a_bad_spro_config(tmp_path) -> None:
    """The real `python -m verl.trainer.main_ppo` entry: the error comes from validation, and Ray never starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main_ppo",
            "algorithm.adv_estimator=spro",
            "+algorithm.spro.betta=0.1",
            *RUNNABLE,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "unknown key algorithm.spro.betta: did you mean algorithm.spro.beta?" in output
    assert "Started a local Ray instance" not in output
    assert "ray init kwargs" not in output


@pytest.mark.parametrize("n", [1, 0])
def test_validation_refuses_spro_with_fewer_than_two_samples_per_prompt(n: int) -> None:
    """rollout.n=1 passes verl's own checks, but every SPRO advantage would be 0: refused before Ray."""
    from verl.trainer import main_ppo

    config = spro_config(*RUNNABLE, f"actor_rollout_ref.rollout.n={n}")
    with pytest.raises(SproConfigError, match=rf"actor_rollout_ref\.rollout\.n={n}: every advantage would be 0"):
        main_ppo.validate_config(config, use_reference_policy=main_ppo.need_reference_policy(config), use_critic=False)
    with open_dict(config):
        config.algorithm.adv_estimator = "grpo"  # verl's own rule for grpo is untouched
    main_ppo.validate_config(config, use_reference_policy=False, use_critic=False)


def _run_entry(module: str, *overrides: str, cwd, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    result = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def test_project_entry_point_refuses_spro_when_ray_workers_would_not_load_the_plugin(tmp_path) -> None:
    """`python -m verl_spro.main_ppo` loads the plugin itself, and stops before Ray when verl's workers would not."""
    code, output = _run_entry(
        "verl_spro.main_ppo", "algorithm.adv_estimator=spro", *RUNNABLE, cwd=tmp_path, VERL_USE_EXTERNAL_PLUGINS="none"
    )
    assert code != 0
    assert "adv_estimator=spro cannot run with VERL_USE_EXTERNAL_PLUGINS=none" in output
    assert "ray init kwargs" not in output and "Started a local Ray instance" not in output


def test_project_entry_point_stops_before_ray_on_rollout_n_1(tmp_path) -> None:
    code, output = _run_entry(
        "verl_spro.main_ppo", "algorithm.adv_estimator=spro", *RUNNABLE, "actor_rollout_ref.rollout.n=1", cwd=tmp_path
    )
    assert code != 0
    assert "actor_rollout_ref.rollout.n=1: every advantage would be 0" in output
    assert "ray init kwargs" not in output and "Started a local Ray instance" not in output
