"""`verl-spro demo`: the quick run learns and writes its CSV/PNG, runs are reproducible, bad arguments are refused."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl_spro.cli import main

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


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    def tiny_run(out: Path) -> list[dict[str, str]]:
        args = ["demo", "--seeds", "1", "--steps", "3", "--first-seed", "7", "--no-plots", "--out", str(out)]
        assert main(args) == 0
        return _read_csv(out / "metrics.csv")

    first, second = tiny_run(tmp_path / "a"), tiny_run(tmp_path / "b")
    assert len(first) == 2 * 4  # two estimators, steps 0..3
    assert first == second


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
    ],
)
def test_bad_numbers_are_refused(args: list[str], named: str) -> None:
    result = _cli(*args)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_out_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "not_a_dir"
    a_file.write_text("x")
    result = _cli("--out", str(a_file / "sub"))
    assert result.returncode != 0
    assert "--out" in result.stderr
    assert "Traceback" not in result.stderr

    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = _cli("--out", str(locked / "sub"))
        assert result.returncode != 0
        assert "--out" in result.stderr
        assert "Traceback" not in result.stderr
