"""SPRO inside real verl 0.9: the plugin, the hooks on the modules that really use them, configs and metrics."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from spro_reference import spro_reference
from verl import DataProto  # importing verl loads verl-spro through the verl.plugins entry point
from verl.trainer.ppo import core_algos, ray_trainer
from verl.trainer.ppo.v1 import utils as v1_utils

from verl_spro.config import SproConfigError
from verl_spro.estimator import SproInputError
from verl_spro.verl_integration import SPRO_METRICS_KEY

METRIC_KEYS = {
    "spro/msa_abs_mean",
    "spro/msa_abs_max",
    "spro/intrinsic_reward_mean",
    "spro/cpr_eos_mean",
    "spro/single_member_frac",
}
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}


def algo(estimator: str = "spro", **spro: object) -> OmegaConf:
    node = {"adv_estimator": estimator, "norm_adv_by_std_in_grpo": True, "gamma": 1.0, "lam": 1.0}
    if spro:
        node["spro"] = spro
    return OmegaConf.create(node)


def make_data(seed: int = 0, group_sizes=(4, 4, 1, 3), length: int = 12, padding_rows: int = 2) -> DataProto:
    """A verl batch as the trainers build it: right-padded responses, uid groups, V1 padding rows at the end."""
    gen = torch.Generator().manual_seed(seed)
    uids = [f"prompt-{g}" for g, size in enumerate(group_sizes) for _ in range(size)]
    lengths = torch.randint(1, length + 1, (len(uids),), generator=gen).tolist()
    uids += [f"pad-{k}" for k in range(padding_rows)]
    lengths += [0] * padding_rows
    batch = len(uids)
    mask = (torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    rewards = torch.zeros(batch, length)
    for i, n in enumerate(lengths):
        if n:
            rewards[i, n - 1] = float(torch.randint(0, 2, (1,), generator=gen))
    return DataProto.from_dict(
        tensors={
            "token_level_rewards": rewards,
            "response_mask": mask,
            "old_log_probs": -3 * torch.rand(batch, length, generator=gen),
            "ref_log_prob": -3 * torch.rand(batch, length, generator=gen),
            "rollout_log_probs": -3 * torch.rand(batch, length, generator=gen),
        },
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


def reference_for(data: DataProto, old_key: str = "old_log_probs", **kwargs) -> torch.Tensor:
    adv, _, _ = spro_reference(
        data.batch["token_level_rewards"],
        data.batch["response_mask"],
        data.batch[old_key],
        data.batch["ref_log_prob"],
        list(data.non_tensor_batch["uid"]),
        **kwargs,
    )
    return adv


# ---------------------------------------------------------------------------------------------------------------
# The advantage through verl's own functions
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", [True, False])
def test_beta_zero_equals_verls_grpo_on_the_same_dataproto(norm: bool) -> None:
    spro = ray_trainer.compute_advantage(
        make_data(1), "spro", norm_adv_by_std_in_grpo=norm, config=algo(beta=0.0)
    ).batch["advantages"]
    grpo = ray_trainer.compute_advantage(make_data(1), "grpo", norm_adv_by_std_in_grpo=norm, config=algo("grpo"))
    torch.testing.assert_close(spro, grpo.batch["advantages"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("beta", [0.05, 0.5])
@pytest.mark.parametrize("norm", [True, False])
def test_legacy_compute_advantage_matches_reference(beta: float, norm: bool) -> None:
    data = ray_trainer.compute_advantage(make_data(2), "spro", norm_adv_by_std_in_grpo=norm, config=algo(beta=beta))
    expected = reference_for(make_data(2), beta=beta, norm_adv_by_std_in_grpo=norm)
    torch.testing.assert_close(data.batch["advantages"].double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(data.batch["returns"], data.batch["advantages"])
    assert METRIC_KEYS <= set(data.meta_info[SPRO_METRICS_KEY])


def test_v1_multi_trajectory_path_matches_reference() -> None:
    """The V1 trainer calls compute_advantage_for_multi_trajectories, which imported compute_advantage by name."""
    assert v1_utils.compute_advantage is ray_trainer.compute_advantage
    data = make_data(3)
    keys = [f"{uid}_0_0" for uid in data.non_tensor_batch["uid"]]
    out = v1_utils.compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator="spro", config=algo(beta=0.2, msa_norm_by_std=True)
    )
    expected = reference_for(make_data(3), beta=0.2, msa_norm_by_std=True)
    torch.testing.assert_close(out.batch["advantages"].double(), expected, rtol=1e-5, atol=1e-5)


def test_separation_trainer_imports_the_wrapped_compute_advantage() -> None:
    from verl.experimental.separation import ray_trainer as separation

    assert separation.compute_advantage is ray_trainer.compute_advantage
    assert separation.compute_advantage.__verl_spro_wraps__ is not None


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_plus_plus", "grpo_vectorized"])
def test_other_estimators_pass_through_untouched(estimator: str) -> None:
    original = ray_trainer.compute_advantage.__verl_spro_wraps__
    ours = ray_trainer.compute_advantage(make_data(4), estimator, config=algo(estimator))
    theirs = original(make_data(4), estimator, config=algo(estimator))
    assert torch.equal(ours.batch["advantages"], theirs.batch["advantages"])
    assert SPRO_METRICS_KEY not in ours.meta_info


def test_bypass_mode_uses_rollout_log_probs() -> None:
    config = algo(beta=0.3)
    config.rollout_correction = {"bypass_mode": True}
    data = ray_trainer.compute_advantage(make_data(5), "spro", config=config)
    expected = reference_for(make_data(5), old_key="rollout_log_probs", beta=0.3)
    torch.testing.assert_close(data.batch["advantages"].double(), expected, rtol=1e-5, atol=1e-5)


def test_response_mask_is_derived_when_missing() -> None:
    """Older trainers leave response_mask to compute_advantage, which derives it from attention_mask."""
    data = make_data(6, padding_rows=0)
    mask = data.batch.pop("response_mask")
    batch, length = mask.shape
    data.batch["responses"] = torch.ones(batch, length, dtype=torch.long)
    data.batch["attention_mask"] = torch.cat([torch.ones(batch, 3, dtype=torch.long), mask], dim=1)
    out = ray_trainer.compute_advantage(data, "spro", config=algo())
    assert torch.equal(out.batch["response_mask"], mask)


def test_metrics_reach_verls_compute_data_metrics_in_the_legacy_trainer() -> None:
    """The legacy fit() logs compute_data_metrics(batch=...) of the batch compute_advantage filled."""
    data = make_data(7, padding_rows=0)
    batch, length = data.batch["response_mask"].shape
    data.batch["prompts"] = torch.ones(batch, 4, dtype=torch.long)
    data.batch["responses"] = torch.ones(batch, length, dtype=torch.long)
    data.batch["attention_mask"] = torch.cat([torch.ones(batch, 4, dtype=torch.long), data.batch["response_mask"]], 1)
    data.batch["token_level_scores"] = data.batch["token_level_rewards"]
    data = ray_trainer.compute_advantage(data, "spro", config=algo())
    metrics = ray_trainer.compute_data_metrics(batch=data, use_critic=False)
    assert METRIC_KEYS <= set(metrics)
    assert "critic/advantages/mean" in metrics  # verl's own metrics are still there
    assert metrics["spro/beta"] == 0.05


# ---------------------------------------------------------------------------------------------------------------
# Errors with what to change
# ---------------------------------------------------------------------------------------------------------------


def test_missing_old_log_probs_says_which_config_enables_them() -> None:
    data = make_data()
    data.batch.pop("old_log_probs")
    with pytest.raises(SproInputError, match="bypass_mode"):
        ray_trainer.compute_advantage(data, "spro", config=algo())
    config = algo()
    config.rollout_correction = {"bypass_mode": True}
    data.batch.pop("rollout_log_probs")
    with pytest.raises(SproInputError, match=r"actor_rollout_ref\.rollout\.calculate_log_probs=true"):
        ray_trainer.compute_advantage(data, "spro", config=config)


def test_missing_ref_log_prob_says_how_to_get_the_reference_policy() -> None:
    data = make_data()
    data.batch.pop("ref_log_prob")
    with pytest.raises(SproInputError, match=r"VERL_USE_EXTERNAL_PLUGINS.*use_kl_loss=true"):
        ray_trainer.compute_advantage(data, "spro", config=algo())


def test_missing_uid_is_an_error() -> None:
    data = make_data()
    data.non_tensor_batch.pop("uid")
    with pytest.raises(SproInputError, match=r"non_tensor_batch\['uid'\] is missing"):
        ray_trainer.compute_advantage(data, "spro", config=algo())


def test_nan_log_prob_names_the_row_through_verl() -> None:
    data = make_data()
    data.batch["response_mask"][2, :4] = 1
    data.batch["ref_log_prob"][2, 3] = float("nan")
    with pytest.raises(SproInputError, match=r"row 2 \(1 positions, first at t=3\)"):
        ray_trainer.compute_advantage(data, "spro", config=algo())


@pytest.mark.parametrize(
    ("spro", "message"),
    [
        ({"betta": 0.1}, r"unknown key algorithm.spro.betta: did you mean algorithm.spro.beta\?"),
        ({"msa_norm": True}, r"did you mean algorithm.spro.msa_norm_by_std\?"),
        ({"beta": -0.1}, r"algorithm.spro.beta must be finite and >= 0, got -0.1"),
        ({"beta": float("nan")}, r"algorithm.spro.beta must be finite"),
        ({"beta": "high"}, r"algorithm.spro.beta must be a number"),
        ({"msa_norm_by_std": "yes"}, r"msa_norm_by_std must be true or false"),
    ],
)
def test_bad_spro_config_is_a_clear_error(spro: dict, message: str) -> None:
    with pytest.raises(SproConfigError, match=message):
        ray_trainer.compute_advantage(make_data(), "spro", config=algo(**spro))


def test_the_registry_entry_alone_refuses_instead_of_dropping_the_process_term() -> None:
    fn = core_algos.get_adv_estimator_fn("spro")
    data = make_data()
    with pytest.raises(SproInputError, match="does not pass"):
        fn(token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"])


def test_empty_batch_through_verl() -> None:
    data = make_data(group_sizes=(), padding_rows=0)
    out = ray_trainer.compute_advantage(data, "spro", config=algo())
    assert out.batch["advantages"].shape == (0, 12)
    assert all(np.isfinite(v) for v in out.meta_info[SPRO_METRICS_KEY].values())


# ---------------------------------------------------------------------------------------------------------------
# Registration: fresh processes, Ray workers
# ---------------------------------------------------------------------------------------------------------------

CHECK_SCRIPT = textwrap.dedent(
    """
    import verl
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn
    from verl.trainer.ppo.v1.utils import compute_advantage
    from verl.trainer.main_ppo import need_reference_policy
    get_adv_estimator_fn("spro")
    assert compute_advantage.__verl_spro_wraps__ is not None
    assert need_reference_policy.__verl_spro_wraps__ is not None
    print("SPRO-OK")
    """
)


def test_entry_point_is_declared_and_loads() -> None:
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="verl.plugins") if ep.name == "spro"]
    entry.load()  # verl swallows a failure here; we do not


def test_registration_in_a_fresh_process_with_no_environment_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT], env=CLEAN_ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SPRO-OK" in result.stdout


def test_opting_out_of_plugins_leaves_spro_unknown() -> None:
    """The check above is not vacuous: with verl's plugin loading off, nothing registers spro."""
    env = {**CLEAN_ENV, "VERL_USE_EXTERNAL_PLUGINS": "none"}
    result = subprocess.run([sys.executable, "-c", CHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "SPRO-OK" not in result.stdout


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    for key in [k for k in os.environ if k.startswith("VERL_USE_EXTERNAL")]:
        os.environ.pop(key)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_registration_inside_a_ray_worker(ray_cluster) -> None:
    @ray_cluster.remote(num_cpus=1)
    def check_in_worker() -> tuple[int, bool, bool, bool]:
        import os

        from verl.trainer.ppo import core_algos, ray_trainer, utils  # a fresh `import verl` in this worker

        return (
            os.getpid(),
            "spro" in core_algos.ADV_ESTIMATOR_REGISTRY,
            hasattr(ray_trainer.compute_advantage, "__verl_spro_wraps__"),
            hasattr(utils.need_reference_policy, "__verl_spro_wraps__"),
        )

    pid, registered, advantage_hooked, ref_hooked = ray_cluster.get(check_in_worker.remote())
    assert pid != os.getpid()
    assert registered and advantage_hooked and ref_hooked


def test_v1_trainer_compute_advantage_with_transfer_queue_logs_spro_metrics(ray_cluster) -> None:
    """verl's real V1 PPOTrainer._compute_advantage, on a real TransferQueue, fills the metrics dict it logs."""
    import transfer_queue as tq
    from tensordict import NonTensorStack, TensorDict
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    data = make_data(8, padding_rows=1)
    mask = data.batch["response_mask"]
    lengths = mask.sum(dim=1).tolist()
    uids = list(data.non_tensor_batch["uid"])

    def nested(values: torch.Tensor) -> torch.Tensor:
        return torch.nested.as_nested_tensor([values[i, : lengths[i]] for i in range(len(uids))], layout=torch.jagged)

    fields = {"response_mask": nested(mask), "rm_scores": nested(data.batch["token_level_rewards"])}
    for key in ("old_log_probs", "ref_log_prob"):
        fields[key] = nested(data.batch[key])
    fields = TensorDict(fields, batch_size=len(uids))
    fields["uid"] = NonTensorStack(*uids)
    keys = [f"{uid}_0_{i}" for i, uid in enumerate(uids)]

    tq.init()
    try:
        meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=fields)
        trainer = PPOTrainerSync.__new__(PPOTrainerSync)  # only _compute_advantage is exercised: no workers
        trainer.config = OmegaConf.create(
            {
                "algorithm": {
                    "adv_estimator": "spro",
                    "norm_adv_by_std_in_grpo": True,
                    "use_kl_in_reward": False,
                    "gamma": 1.0,
                    "lam": 1.0,
                    "spro": {"beta": 0.1},
                },
                "actor_rollout_ref": {"rollout": {"n": 4}},
            }
        )
        metrics: dict = {}
        trainer._compute_advantage(meta, metrics)
        stored = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["advantages"])["advantages"]
    finally:
        tq.close()

    assert METRIC_KEYS <= set(metrics)
    expected = reference_for(data, beta=0.1)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(stored[i].double(), expected[i, :n], rtol=1e-5, atol=1e-5)
