"""SPRO inside real verl 0.9: the plugin, the hooks on the modules that really use them, configs and metrics."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from packaging.requirements import Requirement
from spro_reference import spro_reference, spro_reference_sessions
from verl import DataProto  # importing verl loads verl-spro through the verl.plugins entry point
from verl.trainer.ppo import core_algos, ray_trainer
from verl.trainer.ppo.v1 import utils as v1_utils

from verl_spro.config import SproConfigError
from verl_spro.dataproto_adapter import SPRO_METRICS_KEY
from verl_spro.estimator import SproInputError, group_ids
from verl_spro.verl_hooks import SUPPORTED_VERL, SUPPORTED_VERL_RANGE

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


def make_data(
    seed: int = 0, group_sizes=(4, 4, 1, 3), length: int = 12, padding_rows: int = 2, empty_rows: tuple[int, ...] = ()
) -> DataProto:
    """A verl batch as the trainers build it: right-padded responses, uid groups, V1 padding rows at the end.

    ``empty_rows``: rows of the real groups whose response has zero length (verl's aborted generations), with a
    reward on the last position (so their score counts in their group's statistics)."""
    gen = torch.Generator().manual_seed(seed)
    uids = [f"prompt-{g}" for g, size in enumerate(group_sizes) for _ in range(size)]
    lengths = torch.randint(1, length + 1, (len(uids),), generator=gen).tolist()
    for row in empty_rows:
        lengths[row] = 0
    uids += [f"pad-{k}" for k in range(padding_rows)]
    lengths += [0] * padding_rows
    batch = len(uids)
    mask = (torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    rewards = torch.zeros(batch, length)
    for i, n in enumerate(lengths):
        if n or i in empty_rows:
            rewards[i, n - 1] = float(torch.randint(0, 2, (1,), generator=gen)) + 0.5 * (i in empty_rows)
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


def reference_inputs(data: DataProto, old_key: str = "old_log_probs") -> tuple:
    """The positional inputs of the loop reference, from a DataProto."""
    batch = data.batch
    return (
        batch["token_level_rewards"],
        batch["response_mask"],
        batch[old_key],
        batch["ref_log_prob"],
        list(data.non_tensor_batch["uid"]),
    )


def reference_for(data: DataProto, old_key: str = "old_log_probs", **kwargs) -> torch.Tensor:
    adv, _, _ = spro_reference(*reference_inputs(data, old_key), **kwargs)
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


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("path", ["legacy", "v1"])
def test_beta_zero_equals_grpo_with_zero_length_rows_inside_real_groups(norm: bool, path: str) -> None:
    """verl counts zero-length (aborted) responses in their group's outcome statistics; spro's outcome term does
    too (SPEC), while their own advantages are 0 and the process term never sees them."""
    empty = (1, 5, 6, 10)  # inside groups of 4, 4 and 3 (two in one group); row 8 is a singleton group

    def advantages(estimator: str, beta: float) -> torch.Tensor:
        data = make_data(21, empty_rows=empty)
        config = algo(estimator, beta=beta) if estimator == "spro" else algo(estimator)
        if path == "legacy":
            return ray_trainer.compute_advantage(data, estimator, norm_adv_by_std_in_grpo=norm, config=config).batch[
                "advantages"
            ]
        keys = [f"{uid}_{i}_0" for i, uid in enumerate(data.non_tensor_batch["uid"])]
        adv_estimator = estimator if estimator == "spro" else core_algos.AdvantageEstimator.GRPO
        out = v1_utils.compute_advantage_for_multi_trajectories(
            data, batch_keys=keys, adv_estimator=adv_estimator, norm_adv_by_std_in_grpo=norm, config=config
        )
        return out.batch["advantages"]

    grpo = advantages("grpo", 0.0)
    torch.testing.assert_close(advantages("spro", 0.0), grpo, rtol=1e-6, atol=1e-6)
    spro = advantages("spro", 0.3)
    assert torch.equal(spro[list(empty)], torch.zeros(len(empty), spro.shape[1]))
    expected = reference_for(make_data(21, empty_rows=empty), beta=0.3, norm_adv_by_std_in_grpo=norm)
    torch.testing.assert_close(spro.double(), expected, rtol=1e-5, atol=1e-5)
    # the process term (spro minus its beta=0 outcome) is the same with the zero-length members dropped
    kept = [i for i in range(len(spro)) if i not in empty]
    dropped = make_data(21, empty_rows=empty).select_idxs(kept)
    config = algo(beta=0.3)
    msa_dropped = (
        ray_trainer.compute_advantage(dropped, "spro", norm_adv_by_std_in_grpo=norm, config=config).batch["advantages"]
        - ray_trainer.compute_advantage(
            make_data(21, empty_rows=empty).select_idxs(kept), "grpo", norm_adv_by_std_in_grpo=norm, config=algo("grpo")
        ).batch["advantages"]
    )
    torch.testing.assert_close((spro - grpo)[kept], msa_dropped, rtol=1e-5, atol=1e-6)


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
    keys = [f"{uid}_{i}_0" for i, uid in enumerate(data.non_tensor_batch["uid"])]  # one output per session
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


def object_array(values: list) -> np.ndarray:
    """A numpy object array holding exactly these Python objects (tuples stay tuples)."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


UID_KINDS = {
    "str": ["a", "a", "b", "b", "b", "c", "a", "b"],
    "int": [3, 3, 7, 7, 7, 1, 3, 7],
    "int_float_numpy_one_group": [1, 1.0, np.int64(1), 2, 2.0, np.float32(2.0), 1, 3],
    "int_and_str_two_groups": [1, "1", 1, "1", 1, "1", 2, "2"],
    "numpy_scalars": [np.int32(4), np.int64(4), np.int16(5), np.uint8(5), np.int32(5), np.int64(6), np.int64(4), 6],
    "tuples": [(0, "x"), (0, "x"), (1, "x"), (1, "x"), (0, "y"), (0, "y"), (1, "x"), (0, "x")],
}


@pytest.mark.parametrize("kind", sorted(UID_KINDS))
@pytest.mark.parametrize("norm", [True, False])
def test_beta_zero_equals_grpo_on_every_uid_kind(kind: str, norm: bool) -> None:
    """Groups are verl's grpo groups (dict keys): 1, 1.0 and np.int64(1) are one group; 1 and "1" are two."""

    def data() -> DataProto:
        out = make_data(9, group_sizes=(8,), padding_rows=0)
        out.non_tensor_batch["uid"] = object_array(UID_KINDS[kind])
        return out

    spro = ray_trainer.compute_advantage(data(), "spro", norm_adv_by_std_in_grpo=norm, config=algo(beta=0.0))
    grpo = ray_trainer.compute_advantage(data(), "grpo", norm_adv_by_std_in_grpo=norm, config=algo("grpo"))
    torch.testing.assert_close(spro.batch["advantages"], grpo.batch["advantages"], rtol=1e-6, atol=1e-6)
    expected_groups = len(dict.fromkeys(UID_KINDS[kind]))
    assert int(group_ids(data().non_tensor_batch["uid"], 8, torch.device("cpu")).max()) + 1 == expected_groups


def multi_output_data(seed: int) -> tuple[DataProto, list[str]]:
    """A V1 batch of agent sessions returning 1-3 outputs each, rows in a shuffled order (as verl's balancing
    leaves them), with verl's keys ``{uid}_{session_id}_{index}``; two padding rows of one pad uid at the end."""
    gen = torch.Generator().manual_seed(seed)
    keys = []
    for uid, sessions in (("p0", 4), ("p1", 3), ("p2", 1), ("p3", 2)):
        for session in range(sessions):
            outputs = int(torch.randint(1, 4, (1,), generator=gen))
            keys += [f"{uid}_{session}_{i}" for i in range(outputs)]
    keys = [keys[i] for i in torch.randperm(len(keys), generator=gen).tolist()]
    keys += ["padabc_0_0", "padabc_1_0"]
    data = make_data(seed, group_sizes=(len(keys) - 2,), length=10, padding_rows=2)
    data.non_tensor_batch["uid"] = object_array([key.rsplit("_", 2)[0] for key in keys])
    return data, keys


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", [True, False])
def test_beta_zero_equals_grpo_on_v1_multi_output_sessions(seed: int, norm: bool) -> None:
    """verl's GRPO takes each session's final output and broadcasts its advantage; spro's outcome term does too."""
    kwargs = {"adv_estimator": None, "norm_adv_by_std_in_grpo": norm}
    data, keys = multi_output_data(seed)
    assert len({key.rsplit("_", 1)[0] for key in keys}) < len(keys)  # some session has several outputs
    spro = v1_utils.compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, **{**kwargs, "adv_estimator": "spro"}, config=algo(beta=0.0)
    )
    data, keys = multi_output_data(seed)
    grpo = v1_utils.compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, **{**kwargs, "adv_estimator": core_algos.AdvantageEstimator.GRPO}, config=algo("grpo")
    )
    torch.testing.assert_close(spro.batch["advantages"], grpo.batch["advantages"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("msa_norm_by_std", [True, False])
def test_v1_multi_output_sessions_match_the_loop_reference(msa_norm_by_std: bool) -> None:
    data, keys = multi_output_data(4)
    out = v1_utils.compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator="spro", config=algo(beta=0.3, msa_norm_by_std=msa_norm_by_std)
    )
    data, keys = multi_output_data(4)
    expected = spro_reference_sessions(
        data.batch["token_level_rewards"],
        data.batch["response_mask"],
        data.batch["old_log_probs"],
        data.batch["ref_log_prob"],
        list(data.non_tensor_batch["uid"]),
        session=[key.rsplit("_", 1)[0] for key in keys],
        output_index=[int(key.rsplit("_", 1)[1]) for key in keys],
        beta=0.3,
        msa_norm_by_std=msa_norm_by_std,
    )
    torch.testing.assert_close(out.batch["advantages"].double(), expected, rtol=1e-5, atol=1e-5)
    assert METRIC_KEYS <= set(out.meta_info[SPRO_METRICS_KEY])


def _block_layout(gid: torch.Tensor, active_rows: torch.Tensor) -> tuple[int, int]:
    """``(n_blocks, k)`` when the rows up to the last active one form blocks of ``k`` rows, one group per block;
    ``(0, 0)`` otherwise (the legacy trainer's layout, which the estimator once served by a separate path)."""
    active = active_rows.nonzero().flatten()
    if active.numel() == 0:
        return 0, 0
    lead = gid[: int(active[-1]) + 1]
    run_ends = (lead[1:] != lead[:-1]).nonzero().flatten()
    k = int(run_ends[0]) + 1 if run_ends.numel() else lead.numel()
    if lead.numel() % k:
        return 0, 0
    blocks = lead.view(-1, k)
    if not bool((blocks == blocks[:, :1]).all()) or blocks[:, 0].unique().numel() != blocks.shape[0]:
        return 0, 0
    return blocks.shape[0], k


def long_data(layout: str, dtype: torch.dtype, length: int = 32768) -> DataProto:
    """verl's layouts at long T: ``blocks`` (each prompt's n samples consecutive, padding rows at the end: the
    legacy trainer's layout) or ``balanced`` (rows in no group order, padding rows inside: the V1 trainer's, whose
    rows come in TransferQueue order and are reordered by its seqlen balancing). Log-probs in ``dtype``, as the
    actor returns them."""
    data = make_data(13, group_sizes=(4, 4, 4), length=length, padding_rows=2)
    data.batch["response_mask"][0] = 1  # one response of the full length
    for key in ("old_log_probs", "ref_log_prob"):
        data.batch[key] = data.batch[key].to(dtype)
    if layout == "balanced":
        data.reorder(torch.tensor([5, 0, 12, 9, 1, 13, 6, 2, 10, 3, 7, 11, 4, 8]))  # padding rows inside too
    return data


@pytest.mark.parametrize("layout", ["blocks", "balanced"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("msa_norm_by_std", [False, True])
def test_long_responses_through_verl_match_the_float64_loop(layout, dtype, msa_norm_by_std) -> None:
    """T = 32k, half-precision log-probs, both layouts verl produces (consecutive groups, and groups
    scattered with padding rows inside): within 1e-4 relative of the float64 loop on the same rounded inputs.

    With ``msa_norm_by_std`` a position where the active members' CPRs nearly tie (std ~ 1e-6, at the fp32
    resolution of CPRs of size ~10) amplifies the fp32 rounding by 1/(std + eps): the bound is checked where the
    std is at least 1e-3, and everywhere the result must stay finite and within the normalised scale."""
    data = long_data(layout, dtype)
    uid = data.non_tensor_batch["uid"]
    active = data.batch["response_mask"].sum(dim=1) > 0
    assert bool(_block_layout(group_ids(uid, len(uid), torch.device("cpu")), active)[1]) == (layout == "blocks")
    out = ray_trainer.compute_advantage(data, "spro", config=algo(beta=0.05, msa_norm_by_std=msa_norm_by_std))
    expected = reference_for(long_data(layout, dtype), beta=0.05, msa_norm_by_std=msa_norm_by_std)
    advantages = out.batch["advantages"]
    assert advantages.dtype == torch.float32 and torch.isfinite(advantages).all()
    err = (advantages.double() - expected).abs()
    scale = expected.abs().max()
    if msa_norm_by_std:
        inputs = reference_inputs(long_data(layout, dtype))
        _, _, msa_raw = spro_reference(*inputs, beta=0.05)
        _, _, msa_norm = spro_reference(*inputs, beta=0.05, msa_norm_by_std=True)
        std = torch.where(msa_norm != 0, msa_raw / msa_norm, float("inf"))  # the group std of each position
        well_conditioned = std >= 1e-3
        assert well_conditioned.double().mean() > 0.99
        assert err.max() <= 0.05 * scale
        err = err[well_conditioned]
    assert err.max() <= 1e-4 * scale, f"max error {err.max():.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("bad", [float("nan"), 0.5, 2.0, -1.0])
def test_a_mask_that_is_not_0_1_is_refused_through_verl(bad: float) -> None:
    data = make_data(10)
    data.batch["response_mask"] = data.batch["response_mask"].float()
    data.batch["response_mask"][3, 1] = bad
    with pytest.raises(SproInputError, match=rf"response_mask must hold exactly 0 .* got {bad} at row 3, t=1"):
        ray_trainer.compute_advantage(data, "spro", config=algo())


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
    keys = [f"{uid}_{i}_0" for i, uid in enumerate(uids)]  # verl's {uid}_{session_id}_{index}: one output each

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


# ---------------------------------------------------------------------------------------------------------------
# A verl that differs from the one the hooks were written for: verl keeps working, spro is refused before Ray
# ---------------------------------------------------------------------------------------------------------------

SITE_VERL = Path(importlib.import_module("verl").__file__).parent


def verl_copy(tmp_path: Path, edits: dict[str, Callable[[str], str]]) -> Path:
    """A copy of the installed verl (files symlinked, edited files rewritten); returns the dir to put first on
    PYTHONPATH. ``edits`` maps a path inside the package to a function of its text."""
    root = tmp_path / "site"
    shutil.copytree(SITE_VERL, root / "verl", symlinks=True, copy_function=os.symlink)
    for relative, edit in edits.items():
        path = root / "verl" / relative
        text = path.read_text()
        changed = edit(text)
        assert changed != text, f"edit of {relative} changed nothing: verl moved on, update the test"
        path.unlink()
        path.write_text(changed)
        for cached in path.parent.glob(f"__pycache__/{path.stem}.*.pyc"):
            cached.unlink()
    return root


def run_with_verl(root: Path, script: str) -> subprocess.CompletedProcess:
    env = {**CLEAN_ENV, "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=300
    )


VERL_STILL_WORKS = textwrap.dedent(
    """
    import numpy as np, torch, verl
    assert verl.__file__.startswith({root!r}), verl.__file__
    import verl.trainer.ppo.v1.trainer_base  # the import the broken hook used to break
    from verl import DataProto
    from verl.trainer.ppo import core_algos, ray_trainer
    from verl.trainer.ppo.v1 import utils as v1_utils
    from verl.trainer.main_ppo import need_reference_policy, validate_config
    from verl_spro.config import SproConfigError
    from verl_spro.hydra_compose import compose_trainer_config

    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (6, 5), generator=gen).float()
    mask = torch.ones(6, 5, dtype=torch.long)
    uid = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    tensors = {{"token_level_rewards": rewards, "response_mask": mask}}
    data = DataProto.from_dict(tensors=tensors, non_tensors={{"uid": uid}})
    keys = [f"{{u}}_{{i}}_0" for i, u in enumerate(uid)]
    out = v1_utils.compute_advantage_for_multi_trajectories(data, batch_keys=keys, adv_estimator="grpo")
    expected, _ = core_algos.compute_grpo_outcome_advantage(rewards, mask, uid)
    assert torch.allclose(out.batch["advantages"], expected), "GRPO through verl changed"
    grpo = compose_trainer_config(None, None, ["algorithm.adv_estimator=grpo"])
    assert need_reference_policy(grpo) is False
    print("GRPO-OK")

    spro = compose_trainer_config(None, None, ["algorithm.adv_estimator=spro"])
    try:
        validate_config(spro, use_reference_policy=need_reference_policy(spro), use_critic=False)
    except SproConfigError as err:
        print("REFUSED:", err)
    """
)


def test_a_renamed_hook_target_leaves_verl_working_and_refuses_spro_at_validation(tmp_path) -> None:
    """PPOTrainer._compute_advantage renamed throughout verl (as a 0.9.x may do): verl imports and computes GRPO,
    one warning says why, and spro stops in validate_config naming the verl version and the hook."""

    def rename(text: str) -> str:
        return text.replace("_compute_advantage(", "_compute_advantage_v2(")

    root = verl_copy(tmp_path, {"trainer/ppo/v1/trainer_base.py": rename})
    result = run_with_verl(root, VERL_STILL_WORKS.format(root=str(root)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GRPO-OK" in result.stdout
    (refusal,) = [line for line in result.stdout.splitlines() if line.startswith("REFUSED:")]
    version = importlib.metadata.version("verl")
    assert f"adv_estimator=spro cannot run on verl {version}" in refusal
    assert "verl.trainer.ppo.v1.trainer_base.PPOTrainer._compute_advantage: missing" in refusal
    assert f"verl-spro supports verl{SUPPORTED_VERL_RANGE}" in refusal
    assert result.stderr.count("verl-spro: hook on") == 1  # warned once


def test_an_unsupported_verl_version_is_refused_in_one_line_and_left_untouched(tmp_path) -> None:
    """verl 0.9.0 (on the package index; below the supported range): no hook changes verl, spro is refused."""
    assert "0.9.0" not in SUPPORTED_VERL
    root = verl_copy(tmp_path, {"version/version": lambda text: "0.9.0\n"})
    script = VERL_STILL_WORKS + "\nassert not hasattr(ray_trainer.compute_advantage, '__verl_spro_wraps__')\n"
    result = run_with_verl(root, script.format(root=str(root)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GRPO-OK" in result.stdout
    (refusal,) = [line for line in result.stdout.splitlines() if line.startswith("REFUSED:")]
    assert f"verl 0.9.0 is not supported by verl-spro (supported: verl{SUPPORTED_VERL_RANGE})" in refusal


def test_supported_versions_are_the_pyproject_pin() -> None:
    (pin,) = [Requirement(r) for r in importlib.metadata.requires("verl-spro") or [] if Requirement(r).name == "verl"]
    assert pin.specifier == SUPPORTED_VERL
    assert importlib.metadata.version("verl") in SUPPORTED_VERL


#: The upstream change docs/upstream.md proposes: compute_advantage hands ``batch`` to any estimator that asks.
UPSTREAM_PASSES_BATCH = (
    '        if adv_estimator in (AdvantageEstimator.GDPO, "gdpo"):',
    '        if "batch" in inspect.signature(adv_estimator_fn).parameters:\n'
    '            adv_kwargs["batch"] = data.batch\n'
    '        if adv_estimator in (AdvantageEstimator.GDPO, "gdpo"):',
)


def test_a_verl_that_hands_estimators_the_batch_needs_no_compute_advantage_patch(tmp_path) -> None:
    """Nothing is probed at import (the wrapper is installed on every supported verl), and on such a verl the
    registry entry alone computes SPRO from the batch: verl's own compute_advantage, unwrapped, gives the same."""

    def pass_batch(text: str) -> str:
        return "import inspect\n" + text.replace(*UPSTREAM_PASSES_BATCH)

    root = verl_copy(tmp_path, {"trainer/ppo/ray_trainer.py": pass_batch})
    script = """
        import sys, torch
        sys.path.insert(0, {tests!r})
        from test_verl_integration import algo, make_data, reference_for
        from verl.trainer.ppo import ray_trainer
        verl_own = ray_trainer.compute_advantage.__verl_spro_wraps__
        for compute_advantage in (verl_own, ray_trainer.compute_advantage):
            out = compute_advantage(make_data(2), "spro", config=algo(beta=0.3))
            assert torch.allclose(out.batch["advantages"].double(), reference_for(make_data(2), beta=0.3), atol=1e-5)
        print("BATCH-PASSED-OK")
    """
    result = run_with_verl(root, script.format(tests=str(Path(__file__).parent)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BATCH-PASSED-OK" in result.stdout


def test_project_entry_point_refuses_to_start_when_the_plugin_is_not_in_effect(tmp_path) -> None:
    """`python -m verl_spro.main_ppo` on a verl whose validate_config changed signature: the gate hooks cannot be
    installed, so it exits before Hydra and Ray, naming the hook and why."""

    def rename_param(text: str) -> str:
        return text.replace("use_reference_policy", "use_ref_policy")

    root = verl_copy(tmp_path, {"utils/config.py": rename_param, "trainer/main_ppo.py": rename_param})
    env = {**CLEAN_ENV, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "verl_spro.main_ppo", "algorithm.adv_estimator=spro"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("verl-spro: the plugin is not in effect in verl ")
    assert "validate_config not hooked" in message
    assert "verl.utils.config.validate_config: signature (config" in message and "lacks use_reference_policy" in message
    assert "ray init kwargs" not in result.stdout + result.stderr
