"""SPRO's diagnostics, logged by verl under ``spro/``: pure torch, from an :class:`~verl_spro.estimator.SproOutput`.

Each is a scalar reduction the estimator already made: no pass over ``[B, T]`` here.
"""

from __future__ import annotations

from verl_spro.estimator import SproOutput

__all__ = ["spro_metrics"]


def spro_metrics(out: SproOutput, beta: float) -> dict[str, float]:
    """The ``spro/*`` metrics of one batch (0.0, never NaN, for an empty batch).

    Keys:
        ``spro/msa_abs_mean``: mean |masked step advantage| over active positions.
        ``spro/msa_abs_max``: max |masked step advantage|.
        ``spro/intrinsic_reward_mean``: mean intrinsic reward ``beta * (log pi_old - log pi_ref)`` per active token.
        ``spro/cpr_eos_mean``: mean cumulative process reward at EOS over responses (the implicit sequence reward).
        ``spro/single_member_frac``: fraction of active positions where the row is its group's only active member;
            the MSA is 0 there, so a high value means the process signal is lost on long tails.
        ``spro/outcome_abs_mean``: mean |outcome advantage| over responses, to compare with ``msa_abs_mean``.
        ``spro/beta``: the intrinsic reward scale in force.
    """
    n_active = max(int(out.n_active), 1)
    n_rows = max(int(out.active_rows.sum()), 1)
    cpr_sum = float(out.cpr_at_eos.sum())
    return {
        "spro/msa_abs_mean": float(out.msa_abs_sum) / n_active,
        "spro/msa_abs_max": float(out.msa_abs_max),
        "spro/intrinsic_reward_mean": cpr_sum / n_active,
        "spro/cpr_eos_mean": cpr_sum / n_rows,
        "spro/single_member_frac": int(out.n_single_member) / n_active,
        "spro/outcome_abs_mean": float(out.outcome.abs().sum()) / n_rows,
        "spro/beta": float(beta),
    }
