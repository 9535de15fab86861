"""Every config under configs/ composes on verl's tree and passes verl's real validate_config; GRPO twins differ
from their SPRO config only in the estimator."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
from omegaconf import OmegaConf

from verl_spro.hydra_compose import REPO_CONFIG_DIR, compose_trainer_config, list_repo_configs

CONFIGS = list_repo_configs()
SPRO_CONFIGS = [name for name in CONFIGS if name.startswith("spro_")]
GRPO_TWINS = [name for name in CONFIGS if name.startswith("grpo_")]


def _compose(name: str, overrides: tuple[str, ...] = ()) -> Any:
    return compose_trainer_config(REPO_CONFIG_DIR, name, list(overrides))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _diff(a: Any, b: Any, resolve: bool) -> set[str]:
    fa = _flatten(OmegaConf.to_container(a, resolve=resolve))
    fb = _flatten(OmegaConf.to_container(b, resolve=resolve))
    return {key for key in fa.keys() | fb.keys() if fa.get(key, "<absent>") != fb.get(key, "<absent>")}


def test_the_expected_configs_exist() -> None:
    assert set(SPRO_CONFIGS) == {"spro_megatron_7b", "spro_fsdp2_7b", "spro_megatron_32b_4node"}
    assert {f"grpo_{name[len('spro_') :]}" for name in SPRO_CONFIGS} == set(GRPO_TWINS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_passes_verl_validate_config(name: str) -> None:
    # main_ppo's own names: need_reference_policy as patched by the plugin, validate_config as main_ppo calls it.
    from verl.trainer.main_ppo import need_critic, need_reference_policy, validate_config

    config = _compose(name)
    use_ref = need_reference_policy(config)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        validate_config(config=config, use_reference_policy=use_ref, use_critic=need_critic(config))
    assert "All configuration checks passed" in out.getvalue()
    assert config.actor_rollout_ref.rollout.name == "vllm"
    assert config.actor_rollout_ref.actor.use_kl_loss is False
    assert config.algorithm.use_kl_in_reward is False
    assert config.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu is not None
    if name.startswith("spro_"):
        assert config.algorithm.adv_estimator == "spro"
        assert use_ref is True, "the plugin must make verl build the reference policy for spro"
    # Every interpolation resolves (verl leaves reward.reward_model.rollout.name at ???: no reward model is used).
    OmegaConf.to_container(config, resolve=True)


@pytest.mark.parametrize("name", SPRO_CONFIGS)
def test_paper_recipe(name: str) -> None:
    config = _compose(name)
    actor = config.actor_rollout_ref.actor
    assert config.algorithm.spro == {"beta": 0.05, "msa_norm_by_std": False}
    assert actor.optim.lr == pytest.approx(5e-7)
    assert actor.loss_agg_mode == "seq-mean-token-mean"
    assert config.actor_rollout_ref.rollout.n == 4
    assert config.data.max_response_length == 3072
    assert config.data.train_batch_size == 256
    assert config.critic.enable is False
    if "7b" in name:
        assert config.actor_rollout_ref.model.path == "PRIME-RL/Eurus-2-7B-SFT"


def test_shapes() -> None:
    megatron = _compose("spro_megatron_7b")
    assert megatron.model_engine == "megatron"
    assert megatron.actor_rollout_ref.actor.strategy == megatron.actor_rollout_ref.ref.strategy == "megatron"
    assert (megatron.trainer.nnodes, megatron.trainer.n_gpus_per_node) == (1, 8)

    fsdp2 = _compose("spro_fsdp2_7b")
    assert fsdp2.model_engine == "dp"
    assert fsdp2.actor_rollout_ref.actor.strategy == fsdp2.actor_rollout_ref.ref.strategy == "fsdp2"

    big = _compose("spro_megatron_32b_4node")
    mp = big.actor_rollout_ref.actor.megatron
    assert (big.trainer.nnodes, big.trainer.n_gpus_per_node) == (4, 8)
    assert (mp.tensor_model_parallel_size, mp.pipeline_model_parallel_size) == (8, 2)
    # The reference follows the actor's layout (verl interpolates it) and offloads its weights.
    assert big.actor_rollout_ref.ref.megatron.tensor_model_parallel_size == 8
    assert big.actor_rollout_ref.ref.megatron.param_offload is True
    assert big.actor_rollout_ref.rollout.tensor_model_parallel_size == 8


@pytest.mark.parametrize("twin", GRPO_TWINS)
def test_grpo_twin_differs_only_in_the_estimator(twin: str) -> None:
    grpo = _compose(twin)
    spro = _compose(f"spro_{twin[len('grpo_') :]}")
    assert grpo.algorithm.adv_estimator == "grpo"
    assert _diff(spro, grpo, resolve=False) == {"algorithm.adv_estimator"}
    # With the written values otherwise identical, any other resolved difference is an interpolation of the
    # estimator: the experiment name and what derives from it (logs, checkpoints), so the runs never collide.
    raw = _flatten(OmegaConf.to_container(spro, resolve=False))
    derived = _diff(spro, grpo, resolve=True) - {"algorithm.adv_estimator"}
    assert all("${" in str(raw[key]) for key in derived), derived
    assert {"trainer.experiment_name", "trainer.default_local_dir"} <= derived
    assert spro.trainer.experiment_name != grpo.trainer.experiment_name


def test_spro_keys_are_declared_so_overrides_need_no_plus() -> None:
    config = _compose("spro_megatron_7b", ("algorithm.spro.beta=0.1", "algorithm.spro.msa_norm_by_std=true"))
    assert config.algorithm.spro.beta == pytest.approx(0.1)
    assert config.algorithm.spro.msa_norm_by_std is True


def test_the_configured_reward_function_loads_through_verl() -> None:
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = _compose("spro_fsdp2_7b")
    compute_score = get_custom_reward_fn(config)
    assert compute_score is not None
    kwargs = {"data_source": "openai/gsm8k", "ground_truth": "72", "extra_info": {}}
    assert compute_score(solution_str="so the answer is #### 72", **kwargs) == 1.0
    assert compute_score(solution_str="#### 71", **kwargs) == 0.0
