"""The SPRO advantage estimator: pure torch, no verl import.

Self-Guided Process Reward Optimization (arXiv 2507.01551) adds a dense per-token *process* advantage to GRPO's
per-sequence outcome advantage. The policy is its own process reward model through its log-ratio against a
frozen reference policy. For a batch of ``B`` responses padded to ``T`` tokens, grouped by prompt:

1. intrinsic token reward   ``p[i,t] = beta * (old[i,t] - ref[i,t]) * m[i,t]``
2. cumulative process reward ``R[i,t] = sum_{s<=t} p[i,s]``
3. masked step advantage     ``msa[i,t] = m[i,t] * (R[i,t] - mean{R[j,t] : g(j)=g(i), m[j,t]=1})``
4. outcome advantage         verl's GRPO on ``score[i] = sum_t token_level_rewards[i,t]``
5. final                     ``advantages[i,t] = m[i,t] * (outcome[i] + msa[i,t])``

Everything is vectorised over rows and positions: one cumsum, group sums by ``index_add_`` and a gather back
(one path, whatever order verl delivers the rows in), and in-place ops on one ``[B, T]`` buffer that becomes the
returned advantages. Two sweeps over chunks of rows (the group sums need every row before the baseline exists)
keep each chunk's dozen elementwise steps in the cache on the CPU.
The readable float64 loop version this is tested against is :mod:`verl_spro.estimator_reference`.

Rows with an all-zero mask (zero-length responses) get all-zero advantages and take no part in the process term;
in the outcome term they count in their group's statistics exactly as verl's ``grpo`` counts them.

Groups are the labels' Python equality and hash, as verl's ``grpo`` groups ``uid`` (``1`` and ``1.0`` are one group,
``1`` and ``"1"`` two). ``response_mask`` must hold exactly 0 and 1. NaN/inf inputs on padding positions are
ignored; on active positions they are an error naming the rows.

V1 multi-output sessions (an agent session that returns several outputs, one row each): the outcome term is verl's
GRPO multi-trajectory rule (each session's final output stands for the session in its ``uid`` group, and its
outcome advantage is broadcast to every output of the session). The process term is defined on the same members:
the MSA compares the final outputs of a group position by position, exactly as for single-output batches; the
earlier outputs of a session have no peers to be compared with (like a lone active member) and get no process
term, only the broadcast outcome. With ``beta = 0`` this is exactly verl's ``grpo`` there too. See
:func:`session_final_rows` and :func:`spread_to_sessions`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "SproInputError",
    "SproOutput",
    "compute_spro_advantage",
    "group_ids",
    "grpo_outcome_advantage",
    "session_final_rows",
    "spread_to_sessions",
]


class SproInputError(ValueError):
    """Bad input to the SPRO estimator: wrong shapes, missing or unhashable groups, a mask that is not 0/1,
    NaN/inf on active positions."""


@dataclass
class SproOutput:
    """What :func:`compute_spro_advantage` returns.

    Attributes:
        advantages: ``[B, T]`` float32, ``m * (outcome + msa)``.
        returns: ``[B, T]``, the same tensor as ``advantages`` (verl does the same for GRPO).
        outcome: ``[B]`` float32, the GRPO outcome advantage of each row (0 for all-padding rows, which still
            count in their group's statistics, as in verl's ``grpo``).
        cpr_at_eos: ``[B]`` float32, the cumulative process reward at each row's last active token
            (the sum of the row's intrinsic rewards; 0 for all-padding rows).
        active_rows: ``[B]`` bool, rows with at least one active token (all-padding rows are not).
        n_active: ``[]`` int64, number of active positions ``sum(m)``.
        n_single_member: ``[]`` int64, active positions where the row is the only active member of its group.
        msa_abs_sum: ``[]`` float32, ``sum |msa|`` over the batch.
        msa_abs_max: ``[]`` float32, ``max |msa|`` over the batch (0 for an empty batch).
        msa: ``[B, T]`` float32 masked step advantage (scaled by ``beta``, 0 off the mask), only when asked for
            with ``keep_msa=True`` (it costs a ``[B, T]`` copy); otherwise ``None``.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    outcome: torch.Tensor
    cpr_at_eos: torch.Tensor
    active_rows: torch.Tensor
    n_active: torch.Tensor
    n_single_member: torch.Tensor
    msa_abs_sum: torch.Tensor
    msa_abs_max: torch.Tensor
    msa: torch.Tensor | None = None


def group_ids(index: Sequence | np.ndarray | torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Map verl's per-row group labels (``non_tensor_batch["uid"]``) to dense ids ``0..n_groups-1``.

    Labels are grouped as verl's ``grpo`` groups them, as dict keys: by Python equality and hash. Any hashable label
    works (str, int, float, numpy scalars, tuples); ``1``, ``1.0`` and ``np.int64(1)`` are one group, ``1`` and
    ``"1"`` are two.

    Args:
        index: ``[B]`` group label per row (a numpy object array of str in verl, a list, or a 1-D tensor).
        batch_size: ``B``, to check the length.
        device: where the returned ids live.

    Returns:
        ``[B]`` int64 tensor of group ids, numbered in order of first appearance.
    """
    if index is None:
        raise SproInputError(
            "SPRO needs the prompt group of each row: non_tensor_batch['uid'] is missing. verl's trainers set it "
            "when they repeat each prompt actor_rollout_ref.rollout.n times; pass index=... when calling directly."
        )
    if isinstance(index, torch.Tensor | np.ndarray):
        shape = tuple(index.shape)
        labels = index.tolist() if isinstance(index, torch.Tensor) else list(index)
    else:
        labels = list(index)
        shape = (len(labels),)
    if shape != (batch_size,):
        raise SproInputError(f"index (uid) has shape {shape}, expected ({batch_size},): one group label per row")
    ids: dict[Hashable, int] = {}
    dense = []
    for row, label in enumerate(labels):
        try:
            dense.append(ids.setdefault(label, len(ids)))
        except TypeError:
            raise SproInputError(
                f"index (uid) of row {row} is {label!r} ({type(label).__name__}), which is not hashable: group labels "
                "are compared as verl's grpo compares them, as dict keys"
            ) from None
    return torch.tensor(dense, dtype=torch.long, device=device)


def _group_sum(values: torch.Tensor, gid: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum rows of ``values`` (``[B, ...]``) into their groups: returns ``[n_groups, ...]``."""
    out = torch.zeros((n_groups, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, gid, values)


def grpo_outcome_advantage(
    scores: torch.Tensor,
    gid: torch.Tensor,
    active_rows: torch.Tensor,
    norm_adv_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """GRPO's outcome advantage, vectorised; the same numbers as verl's ``compute_grpo_outcome_advantage``.

    Group mean and unbiased group std of the scores over every row of the group, zero-length rows included (verl
    0.9 puts aborted, zero-length responses inside real groups and its ``grpo`` counts them); a group with a single
    member uses mean 0 and std 1. Rows that are not active (all-padding rows) get 0, as ``grpo``'s ``* mask`` does.

    Args:
        scores: ``[B]`` sequence scores.
        gid: ``[B]`` dense group ids.
        active_rows: ``[B]`` bool, rows with at least one active token (the others are zeroed at the end).
        norm_adv_by_std: divide by ``std + epsilon`` (verl's ``algorithm.norm_adv_by_std_in_grpo``).
        epsilon: verl's ``1e-6``.

    Returns:
        ``[B]`` float32 outcome advantages.
    """
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    # B values only: float64 costs nothing and keeps the group stats as exact as verl's per-group torch.mean/std.
    s = scores.double()
    count = _group_sum(torch.ones_like(s), gid, n_groups)
    mean = _group_sum(s, gid, n_groups) / count.clamp(min=1.0)
    centred = s - mean[gid]
    var = _group_sum(centred * centred, gid, n_groups) / (count - 1.0).clamp(min=1.0)
    single = count <= 1.0
    mean = torch.where(single, 0.0, mean)
    std = torch.where(single, 1.0, var.sqrt())
    centred = s - mean[gid]
    adv = centred / (std[gid] + epsilon) if norm_adv_by_std else centred
    return torch.where(active_rows, adv, 0.0).float()


def _check_inputs(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
) -> None:
    """Shapes: every per-token tensor is ``[B, T]`` like ``response_mask``. (Values are checked while computing.)"""
    if response_mask.dim() != 2:
        raise SproInputError(f"response_mask must be [batch, response_length], got shape {tuple(response_mask.shape)}")
    named = {"token_level_rewards": token_level_rewards, "old_log_probs": old_log_probs, "ref_log_prob": ref_log_probs}
    for name, tensor in named.items():
        if tensor.shape != response_mask.shape:
            raise SproInputError(
                f"{name} has shape {tuple(tensor.shape)} but response_mask has shape {tuple(response_mask.shape)}: "
                "all per-token tensors must be [batch, response_length]"
            )


def _raise_on_non_finite(
    name: str, row_values: torch.Tensor, per_token: tuple[torch.Tensor, ...], active: torch.Tensor
) -> None:
    """Raise :class:`SproInputError` naming the rows whose inputs are NaN/inf on an active position.

    ``row_values`` (``[B]``: the last CPR column, or the score) is finite exactly when every active input of the row
    is, so the common case costs one ``[B]`` check; the ``[B, T]`` scan only runs to build the message.
    """
    bad_rows = (~torch.isfinite(row_values)).nonzero().flatten()
    if bad_rows.numel() == 0:
        return
    bad = torch.zeros(per_token[0].shape, dtype=torch.bool, device=per_token[0].device)
    for tensor in per_token:
        bad |= ~torch.isfinite(tensor)
    bad &= active
    details = []
    for row in bad_rows[:10].tolist():
        cols = bad[row].nonzero().flatten()
        where = f"{int(cols.numel())} positions, first at t={int(cols[0])}" if cols.numel() else "in the sum"
        details.append(f"row {row} ({where})")
    more = f" and {bad_rows.numel() - 10} more rows" if bad_rows.numel() > 10 else ""
    raise SproInputError(
        f"{name} is NaN/inf on active response positions: {', '.join(details)}{more}. "
        "SPRO refuses to turn them into NaN advantages; check how these tensors were computed."
    )


def _mask_is_0_1(response_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[]`` bool tensor: ``mask`` (float32 rows of ``response_mask``) holds only 0 and 1. No sync.

    An integer mask converts exactly, so its min and max (one read) decide; a float one also needs every value
    compared (0.5, NaN). A bool mask is 0/1 by construction.
    """
    if response_mask.dtype == torch.bool:
        return torch.ones((), dtype=torch.bool, device=mask.device)
    if response_mask.dtype.is_floating_point:
        return ~mask.ne(0.0).logical_and_(mask.ne(1.0)).any()  # NaN is neither 0 nor 1
    low, high = torch.aminmax(mask)
    return (low >= 0.0) & (high <= 1.0)


def _refuse_mask(response_mask: torch.Tensor) -> None:
    """Raise the error for a mask that is not 0/1, naming the first bad position (only called when it is not)."""
    mask = response_mask.to(torch.float32)
    bad = mask.ne(0.0).logical_and_(mask.ne(1.0))
    rows = bad.any(dim=1).nonzero().flatten()
    row = int(rows[0])
    col = int(bad[row].nonzero()[0])
    raise SproInputError(
        f"response_mask must hold exactly 0 (padding) and 1 (response tokens), got {float(mask[row, col])} "
        f"at row {row}, t={col} ({int(bad.sum())} such positions in {rows.numel()} rows); SPRO does not "
        "take a mask as weights"
    )


def _float_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """``response_mask`` (``[B, T]``, bool or 0/1 numbers) as float32 0/1; anything else, NaN included, is an error.

    Float * float ops are vectorised where mixed bool/int * float ops are several times slower, hence the float mask.
    """
    mask = response_mask.to(torch.float32)
    if not bool(_mask_is_0_1(response_mask, mask)):
        _refuse_mask(response_mask)
    return mask


#: Rows are processed in chunks of about this many elements (2 MiB of float32) on the CPU, so that the dozen
#: elementwise steps of a chunk find their operands in the cache instead of streaming [B, T] from memory each time.
#: On other devices the whole batch is one chunk.
CHUNK_ELEMENTS = 1 << 19


def _row_chunks(batch_size: int, length: int, device: torch.device) -> list[slice]:
    rows = batch_size if device.type != "cpu" else max(1, CHUNK_ELEMENTS // max(length, 1))
    return [slice(start, min(start + rows, batch_size)) for start in range(0, batch_size, rows)]


def compute_spro_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    index: Sequence | np.ndarray | torch.Tensor,
    beta: float = 0.05,
    norm_adv_by_std_in_grpo: bool = True,
    msa_norm_by_std: bool = False,
    epsilon: float = 1e-6,
    keep_msa: bool = False,
) -> SproOutput:
    """SPRO advantages: GRPO outcome advantage plus the masked step advantage of the cumulative process reward.

    Computed in float32 whatever the input dtype, on the inputs' device (CPU or CUDA).

    Args:
        token_level_rewards: ``[B, T]`` rewards; the row's score is their sum (verl's GRPO convention).
        response_mask: ``[B, T]`` 1 on generated tokens (EOS included), 0 on padding. Bool, or 0/1 int or float.
        old_log_probs: ``[B, T]`` log pi_theta_old of the sampled tokens (``rollout_log_probs`` in bypass mode).
        ref_log_probs: ``[B, T]`` log pi_ref of the sampled tokens.
        index: ``[B]`` prompt group label of each row (verl's ``uid``).
        beta: intrinsic reward scale (``algorithm.spro.beta``).
        norm_adv_by_std_in_grpo: divide the outcome term by the group std (verl's flag).
        msa_norm_by_std: divide the MSA term by the unbiased std of the active group members at each position.
        epsilon: added to every std.
        keep_msa: also return the ``[B, T]`` masked step advantage (a copy; for analysis and tests).

    Returns:
        :class:`SproOutput` with ``advantages`` ``[B, T]`` (a new tensor) and the terms the metrics need.

    Raises:
        SproInputError: shape mismatch, missing, mis-sized or unhashable ``index``, a mask value other than 0 and 1
            (NaN included), NaN/inf on an active position.
    """
    _check_inputs(token_level_rewards, response_mask, old_log_probs, ref_log_probs)
    shape = response_mask.shape
    batch_size, length = shape
    device = response_mask.device
    gid = group_ids(index, batch_size, device)
    if response_mask.numel() == 0:
        return _empty_output(shape, device, keep_msa)
    n_groups = int(gid.max()) + 1
    chunks = _row_chunks(batch_size, length, device)

    # ``adv`` is the one [B, T] buffer of results: it holds the log-ratio, then the masked cumulative process reward
    # R, then the MSA and finally the returned advantages. ``mask_chunk``: a chunk of response_mask as float32 0/1
    # (float * float ops are vectorised; mixed bool/int * float ops are several times slower), converted again in
    # each sweep rather than kept whole (a [B, T] buffer more; reading the int64 mask twice moves as many bytes).
    # ``scratch``: one chunk of widened inputs, gathered group values or |msa|, never read across steps.
    adv = torch.empty(shape, dtype=torch.float32, device=device)
    chunk_shape = (chunks[0].stop - chunks[0].start, length)
    mask_chunk = torch.empty(chunk_shape, dtype=torch.float32, device=device)
    scratch = torch.empty(chunk_shape, dtype=torch.float32, device=device)
    count = torch.zeros((n_groups, length), dtype=torch.float32, device=device)  # active members per position
    group_r = torch.zeros((n_groups, length), dtype=torch.float32, device=device)  # their summed R
    row_tokens = torch.empty(batch_size, dtype=torch.float32, device=device)
    cpr_at_eos = torch.empty(batch_size, dtype=torch.float32, device=device)
    scores = torch.empty(batch_size, dtype=torch.float32, device=device)
    mask_ok, r_finite = [], []
    widen = torch.result_type(old_log_probs, ref_log_probs) != torch.float32

    def mask_rows(rows: slice) -> torch.Tensor:
        """Rows of ``response_mask`` as float32 (in ``mask_chunk`` unless already float32)."""
        if response_mask.dtype == torch.float32:
            return response_mask[rows]
        return mask_chunk[: rows.stop - rows.start].copy_(response_mask[rows])

    def widened(tensor: torch.Tensor, rows: slice) -> torch.Tensor:
        """Rows of ``tensor`` as float32 (in ``scratch`` unless already float32)."""
        if tensor.dtype == torch.float32:
            return tensor[rows]
        return scratch[: rows.stop - rows.start].copy_(tensor[rows])

    # 1-2. intrinsic reward (beta is applied to the MSA: it is linear in beta), its running sum R, group sums of R
    # and of the mask; the scores (verl's GRPO sums every position, in fp32 here).
    for rows in chunks:
        m, r = mask_rows(rows), adv[rows]
        mask_ok.append(_mask_is_0_1(response_mask, m))
        torch.sum(widened(token_level_rewards, rows), dim=1, out=scores[rows])
        if widen:  # bf16/fp16 pairs would be subtracted (and rounded) in half precision: widen first
            r.copy_(old_log_probs[rows]).sub_(widened(ref_log_probs, rows))
        else:
            torch.sub(old_log_probs[rows], ref_log_probs[rows], out=r)
        r.mul_(m).cumsum_(dim=1)
        # masked positions add 0 to the running sum, so the last column is the CPR at the last active token.
        cpr_at_eos[rows] = r[:, -1]
        r_finite.append(torch.isfinite(r[:, -1]).all())
        r.mul_(m)
        torch.sum(m, dim=1, out=row_tokens[rows])
        count.index_add_(0, gid[rows], m)
        group_r.index_add_(0, gid[rows], r)
    if not bool(torch.stack(mask_ok).all()):
        _refuse_mask(response_mask)
    if not bool(torch.stack(r_finite).all()):
        # Rare: NaN/inf somewhere in old/ref. On an active position it is an error; on padding it must count as 0,
        # which ``x * 0`` above does not do for NaN/inf: redo R and its group sums with masked_fill_.
        active = response_mask != 0
        r = torch.sub(old_log_probs.float(), ref_log_probs.float()).masked_fill_(~active, 0.0).cumsum_(dim=1)
        _raise_on_non_finite("old_log_probs/ref_log_prob", r[:, -1], (old_log_probs, ref_log_probs), active)
        cpr_at_eos.copy_(r[:, -1])
        group_r.zero_().index_add_(0, gid, adv.copy_(r.masked_fill_(~active, 0.0)))
        del r
    if not bool(torch.isfinite(scores).all()):  # a NaN/inf on padding counts as 0, like a log-prob there
        active = response_mask != 0
        rewards = torch.where(torch.isfinite(token_level_rewards).logical_or_(active), token_level_rewards, 0.0)
        scores = rewards.sum(dim=-1, dtype=torch.float32)
        _raise_on_non_finite("token_level_rewards", scores, (token_level_rewards,), active)
    cpr_at_eos.mul_(beta)
    active_rows = row_tokens > 0
    baseline = group_r.div_(count.clamp(min=1.0))  # per group and position: the mean R of the active members
    del group_r

    # 4. outcome term: verl's GRPO on the scores.
    outcome = grpo_outcome_advantage(scores, gid, active_rows, norm_adv_by_std_in_grpo, epsilon)
    row_outcome = outcome.unsqueeze(1)

    # 3. masked step advantage msa = beta * m * (R - baseline) (a position with one active member has baseline ==
    # its own R exactly, x / 1, so msa is exactly 0 there), optionally over the group std; then 5. the advantages
    # m * (outcome + msa), in place.
    def spread(group_values: torch.Tensor, rows: slice) -> torch.Tensor:
        """Each row's group values (``[n_groups, T]`` -> the chunk's ``[rows, T]``), gathered into ``scratch``."""
        return torch.index_select(group_values, 0, gid[rows], out=scratch[: rows.stop - rows.start])

    def subtract_baseline(rows: slice, m: torch.Tensor) -> torch.Tensor:
        return adv[rows].addcmul_(m, spread(baseline, rows), value=-1.0).mul_(beta)

    std = None
    if msa_norm_by_std:
        group_sq = torch.zeros_like(count)
        for rows in chunks:
            msa = subtract_baseline(rows, mask_rows(rows))
            group_sq.index_add_(0, gid[rows], torch.mul(msa, msa, out=scratch[: rows.stop - rows.start]))
        # std of the CPRs themselves (beta included), so epsilon keeps its meaning relative to them.
        var = group_sq.div_((count - 1.0).clamp(min=1.0))
        std = torch.where(count > 1.0, var.sqrt_(), 1.0).add_(epsilon)
    msa_copy = torch.empty_like(adv) if keep_msa else None
    abs_sum, abs_max = [], []
    for rows in chunks:
        m = mask_rows(rows)
        msa = subtract_baseline(rows, m) if std is None else adv[rows].div_(spread(std, rows))
        msa_abs = torch.abs(msa, out=scratch[: rows.stop - rows.start])
        abs_sum.append(msa_abs.sum())
        abs_max.append(msa_abs.max())
        if msa_copy is not None:
            msa_copy[rows] = msa
        msa.addcmul_(m, row_outcome[rows])
    msa_abs_sum = torch.stack(abs_sum).sum()
    if not bool(torch.isfinite(msa_abs_sum)):
        raise SproInputError(
            f"the process term overflows float32 at beta={beta:g} (finite log-probs, but beta times their summed "
            "log-ratio exceeds 3.4e38): lower algorithm.spro.beta"
        )
    return SproOutput(
        advantages=adv,
        returns=adv,
        outcome=outcome,
        cpr_at_eos=cpr_at_eos,
        active_rows=active_rows,
        n_active=count.sum().long(),
        n_single_member=(count == 1.0).sum(),
        msa_abs_sum=msa_abs_sum,
        msa_abs_max=torch.stack(abs_max).max(),
        msa=msa_copy,
    )


def _empty_output(shape: torch.Size, device: torch.device, keep_msa: bool) -> SproOutput:
    """What :func:`compute_spro_advantage` returns for a batch with no elements (``B = 0`` or ``T = 0``)."""
    empty = torch.zeros(shape, dtype=torch.float32, device=device)
    zeros_b = torch.zeros(shape[0], dtype=torch.float32, device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    return SproOutput(
        advantages=empty,
        returns=empty,
        outcome=zeros_b,
        cpr_at_eos=zeros_b.clone(),
        active_rows=zeros_b.bool(),
        n_active=zero,
        n_single_member=zero.clone(),
        msa_abs_sum=zero.float(),
        msa_abs_max=zero.float(),
        msa=empty.clone() if keep_msa else None,
    )


def session_final_rows(session: Sequence[Hashable], output_index: Sequence[int]) -> tuple[list[int], list[int]]:
    """The final output of each V1 agent session: verl's GRPO multi-trajectory rule (highest output index).

    Args:
        session: ``[B]`` session label of each row (verl's ``{uid}_{session_id}``).
        output_index: ``[B]`` index of the row's output within its session.

    Returns:
        ``(final_rows, owner)``: ``final_rows[k]`` is the row of the k-th session's final output (sessions in order
        of first appearance), ``owner[i]`` the position in ``final_rows`` of row ``i``'s session.
    """
    final: dict[Hashable, tuple[int, int]] = {}
    for row, (label, idx) in enumerate(zip(session, output_index, strict=True)):
        if label not in final or final[label][0] < idx:
            final[label] = (idx, row)
    position = {label: k for k, label in enumerate(final)}
    return [row for _, row in final.values()], [position[label] for label in session]


def spread_to_sessions(
    final: SproOutput, response_mask: torch.Tensor, final_rows: Sequence[int], owner: Sequence[int]
) -> torch.Tensor:
    """Advantages of every output of multi-output sessions from SPRO on the sessions' final outputs.

    A final output keeps its SPRO advantage ``m * (outcome + msa)``; every other output gets ``m * outcome`` of its
    session's final output (verl's GRPO broadcast) and no process term (see the module docstring).

    Args:
        final: :func:`compute_spro_advantage` on the final outputs (``[F, T]``) in ``final_rows`` order.
        response_mask: ``[B, T]`` mask of all outputs.
        final_rows, owner: from :func:`session_final_rows`.

    Returns:
        ``[B, T]`` float32 advantages.
    """
    device = final.advantages.device
    owner_t = torch.as_tensor(owner, dtype=torch.long, device=device)
    advantages = _float_mask(response_mask).mul(final.outcome[owner_t].unsqueeze(1))
    advantages[torch.as_tensor(final_rows, dtype=torch.long, device=device)] = final.advantages
    return advantages
