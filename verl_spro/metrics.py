"""SPRO's diagnostics, logged by verl under ``spro/``: pure torch, from an :class:`~verl_spro.estimator.SproOutput`.

Each is a scalar reduction the estimator already made: no pass over ``[B, T]`` here.
"""

from __future__ import annotations

from collections.abc import Mapping

from verl_spro.estimator import SproOutput

__all__ = ["RATIO_CAP", "STEPS_IN_A_ROW", "CollapseWatch", "process_to_outcome", "spro_metrics"]

#: ``spro/process_to_outcome`` when the outcome term is 0 and the process term is not (and its ceiling).
RATIO_CAP = 1e6
#: Steps in a row with the process term above the outcome term before :class:`CollapseWatch` speaks. In the
#: committed sweep (docs/sweep/steps.csv), every spro run whose accuracy fell by more than 0.2 reached 3 (21 of 21;
#: 16 at or before the fall, the others within 5 steps of it), no beta 0.05 run reached even 2
#: (tests/test_collapse_watch.py checks it on that file).
STEPS_IN_A_ROW = 3


def process_to_outcome(msa_abs_mean: float, outcome_abs_mean: float) -> float:
    """``msa_abs_mean / outcome_abs_mean``: above 1, the process term outweighs the outcome term in the advantage."""
    if outcome_abs_mean > 0:
        return min(msa_abs_mean / outcome_abs_mean, RATIO_CAP)
    return RATIO_CAP if msa_abs_mean > 0 else 0.0


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
        ``spro/process_to_outcome``: ``msa_abs_mean / outcome_abs_mean`` (:func:`process_to_outcome`); above 1 for
            several steps in a row, the run is likely to collapse (:class:`CollapseWatch`).
        ``spro/beta``: the intrinsic reward scale in force.
    """
    n_active = max(int(out.n_active), 1)
    n_rows = max(int(out.active_rows.sum()), 1)
    cpr_sum = float(out.cpr_at_eos.sum())
    msa_abs_mean = float(out.msa_abs_sum) / n_active
    outcome_abs_mean = float(out.outcome.abs().sum()) / n_rows
    return {
        "spro/msa_abs_mean": msa_abs_mean,
        "spro/msa_abs_max": float(out.msa_abs_max),
        "spro/intrinsic_reward_mean": cpr_sum / n_active,
        "spro/cpr_eos_mean": cpr_sum / n_rows,
        "spro/single_member_frac": int(out.n_single_member) / n_active,
        "spro/outcome_abs_mean": outcome_abs_mean,
        "spro/process_to_outcome": process_to_outcome(msa_abs_mean, outcome_abs_mean),
        "spro/beta": float(beta),
    }


class CollapseWatch:
    """Follows a run's ``spro/*`` metrics step by step and says, once, when the process term has outgrown the
    outcome term for :data:`STEPS_IN_A_ROW` steps in a row: the sign that preceded every collapse in the sweep."""

    def __init__(self, steps_in_a_row: int = STEPS_IN_A_ROW) -> None:
        self.steps_in_a_row = steps_in_a_row
        self.streak = 0
        self.steps = 0
        self.warned = False

    def observe(self, metrics: Mapping[str, float]) -> str | None:
        """Take one step's metrics; the warning (one line) on the step the streak is reached, else None."""
        ratio = metrics.get("spro/process_to_outcome")
        if ratio is None:
            return None
        self.steps += 1
        self.streak = self.streak + 1 if ratio > 1.0 else 0
        if self.warned or self.streak < self.steps_in_a_row:
            return None
        self.warned = True
        return (
            f"verl-spro: the process term has outweighed the outcome term for {self.streak} steps in a row "
            f"(at SPRO step {self.steps}: spro/process_to_outcome={ratio:.3g}, spro/msa_abs_mean="
            f"{metrics.get('spro/msa_abs_mean', float('nan')):.3g}, spro/outcome_abs_mean="
            f"{metrics.get('spro/outcome_abs_mean', float('nan')):.3g}): in the committed sweep every run that "
            "collapsed showed this first. Consider a smaller algorithm.spro.beta (now "
            f"{metrics.get('spro/beta', float('nan')):g}; no run with 0.05 showed it)"
        )
