"""The readable SPRO: float64, plain Python loops over rows, groups and positions.

This is SPRO as ``SPEC.md`` writes it, step by step, favouring obviousness over speed; the vectorised
:mod:`verl_spro.estimator` is tested against it (verl keeps the same habit: a plain version next to the fast one).
It is slow (pure Python, ``O(B * T)`` interpreter steps): use it to check, never to train.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch

__all__ = ["spro_reference", "spro_reference_sessions"]


def spro_reference(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    index: Sequence,
    beta: float = 0.05,
    norm_adv_by_std_in_grpo: bool = True,
    msa_norm_by_std: bool = False,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPRO advantages, one response per row.

    Args:
        token_level_rewards, response_mask, old_log_probs, ref_log_probs: ``[B, T]``.
        index: ``B`` group labels, grouped by Python equality (as a dict groups its keys, like verl's grpo).
        beta, norm_adv_by_std_in_grpo, msa_norm_by_std, epsilon: as in
            :func:`verl_spro.estimator.compute_spro_advantage`.

    Returns:
        ``(advantages [B, T], outcome [B], msa [B, T])`` in float64.
    """
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

    # 4. GRPO outcome advantage over every member of the group, zero-length rows included (verl's grpo counts them;
    # their own advantage is 0 through the mask); a non-finite reward on a padding position counts as 0 (like a
    # non-finite log-prob there)
    outcome = [0.0] * batch
    for members in groups.values():
        scores = {}
        for j in members:
            scores[j] = sum(r if (m or math.isfinite(r)) else 0.0 for r, m in zip(rewards[j], mask[j], strict=True))
        if len(members) == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(scores.values()) / len(members)
            std = math.sqrt(sum((s - mean) ** 2 for s in scores.values()) / (len(members) - 1))
        for j in members:
            if any(mask[j]):
                outcome[j] = (scores[j] - mean) / (std + epsilon) if norm_adv_by_std_in_grpo else scores[j] - mean

    # 5. final advantage
    advantages = [[mask[i][t] * (outcome[i] + msa[i][t]) for t in range(length)] for i in range(batch)]
    as_tensor = lambda rows: torch.tensor(rows, dtype=torch.float64).reshape(batch, length)  # noqa: E731
    return as_tensor(advantages), torch.tensor(outcome, dtype=torch.float64), as_tensor(msa)


def spro_reference_sessions(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    index: Sequence,
    session: Sequence,
    output_index: Sequence[int],
    **kwargs,
) -> torch.Tensor:
    """SPRO on V1 multi-output sessions (an agent session may return several outputs, one row each).

    A session's final output is its row with the highest ``output_index`` (verl's rule). Each session is one group
    member, represented by its final output: :func:`spro_reference` runs on the final outputs alone. A final
    output keeps its SPRO advantage; every other output of the session gets ``m * outcome`` of the session's final
    output (verl's GRPO broadcast) and no process term (it has no peers to be compared with, like a lone active
    member).

    Args:
        index: ``B`` group labels (``uid``); session: ``B`` session labels; output_index: ``B`` output indices.
        kwargs: as :func:`spro_reference`.

    Returns:
        ``[B, T]`` float64 advantages.
    """
    final_of: dict = {}
    for i, label in enumerate(session):
        if label not in final_of or output_index[final_of[label]] < output_index[i]:
            final_of[label] = i
    finals = list(final_of.values())
    adv, outcome, _ = spro_reference(
        token_level_rewards[finals],
        response_mask[finals],
        old_log_probs[finals],
        ref_log_probs[finals],
        [index[i] for i in finals],
        **kwargs,
    )
    position = {row: k for k, row in enumerate(finals)}
    mask = response_mask.double()
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for i, label in enumerate(session):
        final = final_of[label]
        out[i] = adv[position[i]] if i == final else mask[i] * outcome[position[final]]
    return out
