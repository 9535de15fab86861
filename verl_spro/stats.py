"""The statistics of ``verl-spro demo`` and ``verl-spro sweep``: SPRO - GRPO paired by seed, with a 95% interval.

With a handful of seeds (5 by default) a percentile bootstrap of the mean under-covers: it resamples only 5
values, so its interval is too narrow (over 4000 simulated sets of 5 normal differences with mean 0, its 95%
interval held 0 in 83% of them, the t-interval below in 94.9%). An exact sign-flip test over the 2^5 sign patterns
cannot reject at 5% at all (its smallest two-sided p-value is 2/32 = 0.0625). So the interval is the paired
t-interval ``mean +- t(0.975, n-1) * sd / sqrt(n)`` of the per-seed differences, which assumes those differences
roughly normal.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["INTERVAL", "MIN_SEEDS_FOR_INTERVAL", "paired_difference", "t_quantile_975", "verdict"]

#: How the interval is named in tables, figures and CSV notes.
INTERVAL = "95% paired t-interval"
#: With one seed there is no spread; with two the t-interval has one degree of freedom (mean +- 12.7 sd/sqrt(2)) and
#: says nothing a reader could use. From three seeds on a difference is stated with its interval.
MIN_SEEDS_FOR_INTERVAL = 3

# t(0.975, df) for df = 1..30 (standard tables, 3 decimals); beyond, the Cornish-Fisher expansion below.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df >= 1`` degrees of freedom (3 decimals up to 30, then < 1e-4)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def paired_difference(a: Any, b: Any) -> tuple[float, float, float]:
    """Mean of ``a - b`` over seeds ([n] each, paired by position) and its :data:`INTERVAL` ``(low, high)``.

    NaN bounds for fewer than :data:`MIN_SEEDS_FOR_INTERVAL` seeds. Identical differences give a zero-width interval.
    """
    import numpy as np

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(diff.mean()) if len(diff) else float("nan")
    if len(diff) < MIN_SEEDS_FOR_INTERVAL:
        return mean, float("nan"), float("nan")
    half = t_quantile_975(len(diff) - 1) * float(diff.std(ddof=1)) / math.sqrt(len(diff))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    """What a 95% interval of a difference A - B says: ``A higher``, ``A lower``, ``within noise`` or no interval."""
    if low != low or high != high:  # NaN: too few seeds
        return f"no interval (fewer than {MIN_SEEDS_FOR_INTERVAL} seeds)"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "within noise (the interval contains 0)"
