"""The readable reference: SPRO in float64 with plain Python loops over rows, groups and positions.

Every vectorised path in ``verl_spro`` is tested against this file. It follows ``../shared/SPEC.md`` step by
step and favours obviousness over speed.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch


def spro_reference(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    index: list,
    beta: float = 0.05,
    norm_adv_by_std_in_grpo: bool = True,
    msa_norm_by_std: bool = False,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(advantages [B, T], outcome [B], msa [B, T])`` in float64."""
    rewards = token_level_rewards.double().tolist()
    mask = response_mask.double().tolist()
    old = old_log_probs.double().tolist()
    ref = ref_log_probs.double().tolist()
    batch = len(mask)
    length = len(mask[0]) if batch else 0

    # 1-2. intrinsic reward and cumulative process reward
    cpr = [[0.0] * length for _ in range(batch)]
    for i in range(batch):
        running = 0.0
        for t in range(length):
            if mask[i][t]:
                running += beta * (old[i][t] - ref[i][t])
            cpr[i][t] = running

    groups: dict = defaultdict(list)
    for i in range(batch):
        groups[index[i]].append(i)

    # 3. masked step advantage
    msa = [[0.0] * length for _ in range(batch)]
    for members in groups.values():
        for t in range(length):
            active = [j for j in members if mask[j][t]]
            if len(active) < 2:
                continue  # a lone active member (or none): msa stays 0
            values = [cpr[j][t] for j in active]
            mean = sum(values) / len(values)
            std = 1.0
            if msa_norm_by_std:
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) + epsilon
            for j in active:
                msa[j][t] = (cpr[j][t] - mean) / std

    # 4. GRPO outcome advantage over the rows that have at least one active token
    outcome = [0.0] * batch
    for members in groups.values():
        rows = [j for j in members if any(mask[j])]
        scores = {j: sum(rewards[j]) for j in rows}
        if len(rows) == 1:
            mean, std = 0.0, 1.0
        elif rows:
            mean = sum(scores.values()) / len(rows)
            std = math.sqrt(sum((s - mean) ** 2 for s in scores.values()) / (len(rows) - 1))
        for j in rows:
            outcome[j] = (scores[j] - mean) / (std + epsilon) if norm_adv_by_std_in_grpo else scores[j] - mean

    # 5. final advantage
    advantages = [[mask[i][t] * (outcome[i] + msa[i][t]) for t in range(length)] for i in range(batch)]
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.float64).reshape(batch, length)  # noqa: E731
    return as_tensor(advantages), torch.tensor(outcome, dtype=torch.float64), as_tensor(msa)
