"""A spro run says, once, when the process term outgrows the outcome term for several steps in a row: the rule
holds on the committed sweep (docs/sweep/steps.csv) and reaches verl's log through verl's real legacy-trainer path."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo import ray_trainer

from verl_spro import verl_hooks
from verl_spro.metrics import RATIO_CAP, STEPS_IN_A_ROW, CollapseWatch, process_to_outcome

STEPS_CSV = Path(__file__).resolve().parents[1] / "docs" / "sweep" / "steps.csv"


def _sweep_runs() -> dict[tuple[str, str, str], list[dict[str, str]]]:
    runs: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    with STEPS_CSV.open() as f:
        for row in csv.DictReader(f):
            if row["estimator"] == "spro":
                runs[(row["task"], row["beta"], row["seed"])].append(row)
    return {key: sorted(rows, key=lambda r: int(r["step"])) for key, rows in runs.items()}


def _first_warning(rows: list[dict[str, str]]) -> int | None:
    watch = CollapseWatch()
    for row in rows:
        if not row["spro/msa_abs_mean"]:
            continue
        msa, outcome = float(row["spro/msa_abs_mean"]), float(row["spro/outcome_abs_mean"])
        metrics = {"spro/process_to_outcome": process_to_outcome(msa, outcome), "spro/beta": float(row["beta"])}
        if watch.observe(metrics) is not None:
            return int(row["step"])
    return None


def test_the_rule_flags_every_collapsed_sweep_run_and_no_beta_005_run():
    runs = _sweep_runs()
    collapsed, flagged, flagged_early, beta_005 = 0, 0, 0, 0
    for (_task, beta, _seed), rows in runs.items():
        accuracy = [float(r["accuracy"]) for r in rows]
        fell = np.mean(accuracy[:5]) - np.mean(accuracy[-5:]) > 0.2
        step = _first_warning(rows)
        if beta == "0.05":
            beta_005 += 1
            assert step is None, f"beta 0.05 run {_task} seed {_seed} flagged at step {step}"
        if fell:
            collapsed += 1
            flagged += step is not None
            # The fall: the last step of the first 5-step window whose mean accuracy is 0.2 below the first 5 steps'.
            window = np.convolve(accuracy, np.ones(5) / 5, "valid")
            fall = 4 + int(np.argmax(window < np.mean(accuracy[:5]) - 0.2))
            assert step is not None and step <= fall + 5
            flagged_early += step <= fall
    assert (collapsed, flagged, beta_005) == (21, 21, 15)
    assert flagged_early == 16  # measured: 16 of the 21 at or before that step, the other 5 within 5 steps of it


def test_the_watch_speaks_once_after_the_streak_and_a_lower_ratio_breaks_it():
    watch = CollapseWatch()
    ratios = [2.0, 2.0, 0.5, 2.0, 2.0, 3.0, 4.0, 5.0]
    said = [watch.observe({"spro/process_to_outcome": r, "spro/beta": 0.2}) for r in ratios]
    assert [i for i, s in enumerate(said) if s] == [STEPS_IN_A_ROW + 2]
    assert "algorithm.spro.beta (now 0.2" in said[5] and "\n" not in said[5]
    assert watch.observe({"spro/msa_abs_mean": 1.0}) is None  # not a spro step: ignored
    assert process_to_outcome(0.0, 0.0) == 0.0 and process_to_outcome(1.0, 0.0) == RATIO_CAP


def _step_batch(seed: int) -> DataProto:
    """Two groups of 4, partial rewards, old log-probs far from the reference: a large beta makes the process
    term dominate."""
    gen = torch.Generator().manual_seed(seed)
    rows, length = 8, 6
    mask = torch.ones(rows, length, dtype=torch.long)
    rewards = torch.zeros(rows, length)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": rewards,
            "token_level_scores": rewards,
            "response_mask": mask,
            "old_log_probs": -3 * torch.rand(rows, length, generator=gen),
            "ref_log_prob": -3 * torch.rand(rows, length, generator=gen),
            "prompts": torch.ones(rows, 3, dtype=torch.long),
            "responses": torch.ones(rows, length, dtype=torch.long),
            "attention_mask": torch.ones(rows, 3 + length, dtype=torch.long),
        },
        non_tensors={"uid": np.array(["a"] * 4 + ["b"] * 4, dtype=object)},
    )
    return data


@pytest.mark.parametrize(("beta", "warns"), [(5.0, True), (0.0, False)])
def test_a_legacy_trainer_run_logs_the_warning_once_and_the_ratio_every_step(monkeypatch, caplog, beta, warns):
    monkeypatch.setattr(verl_hooks, "_legacy_watch", CollapseWatch())
    config = OmegaConf.create({"adv_estimator": "spro", "norm_adv_by_std_in_grpo": True, "spro": {"beta": beta}})
    ratios = []
    with caplog.at_level(logging.WARNING, logger="verl_spro.verl_hooks"):
        for step in range(STEPS_IN_A_ROW + 2):
            data = ray_trainer.compute_advantage(_step_batch(step), "spro", config=config)
            metrics = ray_trainer.compute_data_metrics(batch=data, use_critic=False)  # once per step in fit()
            ratios.append(metrics["spro/process_to_outcome"])
    warnings = [r.getMessage() for r in caplog.records if "outweighed the outcome term" in r.getMessage()]
    if warns:
        assert all(r > 1 for r in ratios)
        assert len(warnings) == 1 and f"algorithm.spro.beta (now {beta:g}" in warnings[0]
    else:
        assert ratios == [0.0] * len(ratios) and warnings == []
