"""`verl-spro demo`: the quick run learns and writes its CSV/PNG, runs are reproducible, bad arguments are refused."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from verl_spro.cli import main
from verl_spro.demo import Hyper, figure, summary_table
from verl_spro.output_files import atomic_write

REQUIRED_COLUMNS = {"estimator", "seed", "step", "accuracy", "entropy", "response_length"}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _mean_accuracy(rows: list[dict[str, str]], estimator: str, steps: range) -> float:
    values = [float(r["accuracy"]) for r in rows if r["estimator"] == estimator and int(r["step"]) in steps]
    assert values, f"no {estimator} rows in steps {steps}"
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_quick")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_spro_learns(quick_run: Path) -> None:
    rows = _read_csv(quick_run / "metrics.csv")
    last_step = max(int(r["step"]) for r in rows)
    start = _mean_accuracy(rows, "spro", range(0, 10))
    end = _mean_accuracy(rows, "spro", range(last_step - 9, last_step + 1))
    assert end > start + 0.15, f"SPRO accuracy did not rise: first 10 steps {start:.3f}, last 10 steps {end:.3f}"


def test_quick_writes_csv_and_png(quick_run: Path) -> None:
    rows = _read_csv(quick_run / "metrics.csv")
    columns = set(rows[0])
    assert columns >= REQUIRED_COLUMNS
    assert any(c.startswith("spro/") for c in columns), f"no spro/* metric columns in {sorted(columns)}"
    assert {r["estimator"] for r in rows} == {"spro", "grpo"}
    # spro rows carry the estimator's diagnostics; grpo rows leave them empty.
    spro_col = next(c for c in columns if c.startswith("spro/"))
    assert all(r[spro_col] != "" for r in rows if r["estimator"] == "spro")
    pngs = list(quick_run.glob("*.png"))
    assert pngs, "no PNG written"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_metrics_and_same_out_twice(tmp_path: Path) -> None:
    def tiny_run(out: Path, *extra: str) -> list[dict[str, str]]:
        args = ["demo", "--seeds", "1", "--steps", "3", "--first-seed", "7", "--no-plots", "--out", str(out), *extra]
        assert main(args) == 0
        return _read_csv(out / "metrics.csv")

    # The same folder twice (--force: it holds the first run): the second run replaces the first's CSV whole and
    # leaves no temporary file (the run lock's file stays, hidden).
    first, second = tiny_run(tmp_path), tiny_run(tmp_path, "--force")
    assert len(first) == 2 * 4  # two estimators, steps 0..3
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [".verl-spro.lock", "metrics.csv"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verl_spro.cli", "demo", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--steps", "-5"], "--steps"),
        (["--seeds", "0"], "--seeds"),
        (["--steps", "ten"], "--steps"),
        (["--beta", "nan"], "--beta: algorithm.spro.beta must be finite"),
        (["--beta", "-0.1"], "--beta: algorithm.spro.beta must be finite and >= 0"),
        (["--threads", "100000"], "--threads must be <="),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--first-seed", str(2**70)], "--first-seed: seeds"),
        (["--first-seed", "-1"], "--first-seed: seeds"),
        (["--first-seed", str(2**32 - 1), "--seeds", "2"], "--first-seed: seeds"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(tmp_path: Path, args: list[str], named: str) -> None:
    out = tmp_path / "out"
    result = _cli(*args, "--out", str(out))
    assert result.returncode == 2
    assert named in result.stderr.strip().splitlines()[-1]  # one error line (after argparse's usage, if any)
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_unwritable_out_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "not_a_dir"
    a_file.write_text("x")
    for out in (a_file, a_file / "sub", Path("/proc/verl_spro_demo_out")):
        result = _cli("--out", str(out))
        assert result.returncode == 2
        assert f"--out {out}" in result.stderr
        assert "Traceback" not in result.stderr
    assert a_file.read_text() == "x"

    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = _cli("--out", str(locked / "sub"))
        assert result.returncode != 0
        assert "--out" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_output_name_taken_by_a_directory_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "spro_vs_grpo.png").mkdir()
    result = _cli("--quick", "--out", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'spro_vs_grpo.png'} is a directory" in result.stderr
    assert not (tmp_path / "metrics.csv").exists()


def test_atomic_write_keeps_the_previous_file_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("previous,complete\n")

    def dies_half_way(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_half_way)
    assert path.read_text() == "previous,complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def _synthetic_rows(seeds: list[int], spro_gain: Callable[[int], float]) -> list[dict[str, Any]]:
    """Constant accuracy per run: grpo 0.2 + 0.1 * index of the seed, spro the same plus ``spro_gain(seed)``."""
    rows = []
    for i, seed in enumerate(seeds):
        for estimator in ("spro", "grpo"):
            acc = 0.2 + 0.1 * i + (spro_gain(seed) if estimator == "spro" else 0.0)
            for step in range(21):
                rows.append(
                    {
                        "estimator": estimator,
                        "seed": seed,
                        "step": step,
                        "accuracy": acc,
                        "eval_accuracy": acc + 0.05 if step % 10 == 0 else float("nan"),
                        "entropy": 0.5,
                        "response_length": 4.0,
                        "spro/msa_abs_mean": 0.01 if estimator == "spro" else float("nan"),
                        "spro/outcome_abs_mean": 0.3 if estimator == "spro" else float("nan"),
                    }
                )
    return rows


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_one_or_two_seeds_state_no_difference(seeds: list[int]) -> None:
    table = summary_table(_synthetic_rows(seeds, lambda seed: 0.2), Hyper())
    if len(seeds) == 1:
        assert "±" not in table and "+-" not in table
        assert "one seed, so no spread" in table
    assert "too few to tell a difference from noise" in table
    assert "SPRO - GRPO" not in table  # no difference stated as a result


@pytest.mark.parametrize(
    ("gain", "expected"),
    [
        (lambda seed: 0.2, "higher"),
        (lambda seed: -0.2, "lower"),
        (lambda seed: 0.01 * (-1) ** seed, "within noise"),  # +0.01, -0.01, ...: a difference that is noise
    ],
)
def test_difference_is_stated_with_its_interval(gain: Callable[[int], float], expected: str) -> None:
    table = summary_table(_synthetic_rows([0, 1, 2, 3, 4], gain), Hyper())
    line = next(line for line in table.splitlines() if line.strip().startswith("final acc"))
    assert line.endswith(expected) or f": {expected}" in line, table
    assert "±" in table  # five seeds: a spread


def test_plot_shows_the_tables_spread_the_target_and_both_advantage_terms() -> None:
    import numpy as np
    from matplotlib.collections import PolyCollection

    hp = Hyper()
    fig = figure(_synthetic_rows([0, 1, 2], lambda seed: 0.0), hp)
    ax_acc, _, _, ax_adv = fig.axes
    # The band is mean ± std over seeds (std with ddof=0, as in the table): 0.3 ± 0.0816, not the 0.2..0.4 range.
    bands = [c for c in ax_acc.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4  # sampled and greedy, for each estimator
    sampled_y = bands[0].get_paths()[0].vertices[:, 1]
    std = float(np.std([0.2, 0.3, 0.4]))
    assert sampled_y.min() == pytest.approx(0.3 - std) and sampled_y.max() == pytest.approx(0.3 + std)
    greedy_y = bands[1].get_paths()[0].vertices[:, 1]
    assert greedy_y.max() == pytest.approx(0.35 + std)
    # The target line behind "steps to 65%" is drawn.
    assert any(list(line.get_ydata()) == [hp.target_accuracy] * 2 for line in ax_acc.get_lines())
    labels = " ".join(line.get_label() for line in ax_adv.get_lines())
    assert "spro/msa_abs_mean" in labels and "spro/outcome_abs_mean" in labels


def test_a_diverging_run_is_one_line_not_nans(tmp_path: Path) -> None:
    """beta 1e300 passes algorithm.spro.beta's rule (finite, >= 0) but overflows float32 in the advantages."""
    result = _cli("--beta", "1e300", "--steps", "2", "--seeds", "1", "--no-plots", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "error: training diverged: spro (beta 1e+300), seed 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "metrics.csv").exists()
