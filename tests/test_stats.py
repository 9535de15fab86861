"""The paired t-interval of the demo and the sweep (verl_spro/stats.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from verl_spro.stats import MIN_SEEDS_FOR_INTERVAL, paired_difference, t_quantile_975, verdict


def test_t_quantiles_match_the_tables_and_join_the_expansion_smoothly() -> None:
    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776 and t_quantile_975(30) == 2.042
    # Beyond the table: 2.0395 at 31, 2.021 at 40, 2.000 at 60, 1.984 at 100 (standard tables), 1.960 in the limit.
    for df, expected in ((31, 2.0395), (40, 2.021), (60, 2.000), (100, 1.984), (10**6, 1.960)):
        assert t_quantile_975(df) == pytest.approx(expected, abs=6e-4)
    values = [t_quantile_975(df) for df in range(1, 200)]
    assert all(a > b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile_975(0)


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences() -> None:
    a, b = [0.6, 0.55, 0.7, 0.65, 0.5], [0.5] * 5  # differences 0.1, 0.05, 0.2, 0.15, 0.0
    mean, low, high = paired_difference(a, b)
    half = 2.776 * np.std([0.1, 0.05, 0.2, 0.15, 0.0], ddof=1) / math.sqrt(5)
    assert mean == pytest.approx(0.1)
    assert (low, high) == pytest.approx((0.1 - half, 0.1 + half))
    assert verdict(low, high) == "higher"
    assert paired_difference([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]) == pytest.approx((0.5, 0.5, 0.5))  # no spread


def test_too_few_seeds_give_no_interval() -> None:
    mean, low, high = paired_difference([1.0, 2.0], [0.0, 0.0])
    assert MIN_SEEDS_FOR_INTERVAL == 3 and mean == 1.5 and math.isnan(low) and math.isnan(high)
    assert verdict(low, high).startswith("no interval")
    assert verdict(-0.1, 0.1).startswith("within noise") and verdict(-0.3, -0.1) == "lower"


def test_the_interval_covers_about_95_percent_with_5_seeds() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(2000):
        _, low, high = paired_difference(rng.normal(0.3, 1.0, 5), np.zeros(5))
        covered += low <= 0.3 <= high
    assert 0.93 <= covered / 2000 <= 0.97
