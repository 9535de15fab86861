"""Smoke test of ``verl-spro bench`` at tiny sizes: CSV columns, PNG, every method present. No timing assertions."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from verl_spro import bench
from verl_spro.cli import main


def test_bench_quick_writes_csv_and_png_with_every_method(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["bench", "--out", str(tmp_path), "--batch-sizes", "16", "32", "--lengths", "32", "--group-sizes", "4"]
    assert main([*argv, "--repeats", "2", "--warmup", "1"]) == 0

    with open(tmp_path / "bench.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == bench.CSV_COLUMNS
        rows = list(reader)
    assert (tmp_path / "bench.png").stat().st_size > 0
    # 2 dtypes x 2 batch sizes x 2 row layouts, each with every method, all measured.
    assert len(rows) == 2 * 2 * 2 * len(bench.METHODS)
    assert {row["layout"] for row in rows} == set(bench.LAYOUTS)
    assert {row["method"] for row in rows} == set(bench.METHODS)
    assert {row["dtype"] for row in rows} == {"fp32", "bf16"}
    for row in rows:
        assert row["status"] == "ok", row
        assert int(row["repeats"]) == 2
        assert float(row["best_ms"]) <= float(row["median_ms"])
        if row["peak_extra_bytes"]:
            assert int(row["peak_extra_bytes"]) >= 0
        assert float(row["spread"]) >= 0
        assert row["noisy"] == ("yes" if float(row["spread"]) > bench.NOISE_THRESHOLD else "no")
    out = capsys.readouterr().out
    assert "spro/grpo" in out and "log-log slope" in out


def test_combos_that_do_not_fit_are_skipped_with_a_note(tmp_path: Path) -> None:
    argv = ["bench", "--out", str(tmp_path), "--batch-sizes", "16", "--lengths", "32", "--group-sizes", "4"]
    assert main([*argv, "--dtypes", "fp32", "--repeats", "1", "--mem-limit-gib", "0.000001", "--no-memory"]) == 0
    with open(tmp_path / "bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["method"] for row in rows} == set(bench.METHODS)
    assert all(row["status"] == "skipped" and "GiB" in row["note"] for row in rows)


def test_loglog_slope() -> None:
    assert bench.loglog_slope([(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)]) == pytest.approx(1.0)
    assert math.isnan(bench.loglog_slope([(4.0, 1.0), (4.0, 2.0)]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--group-sizes", "0"], "--group-sizes must be >= 1, got 0"),
        (["--lengths", "ten"], "--lengths must be an integer, got 'ten'"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--repeats", "100000"], "--repeats must be <= 10000, got 100000"),
        (["--batch-sizes", str(2**40)], f"--batch-sizes must be <= {2**31 - 1}"),
        (["--seed", str(2**70)], f"--seed must be <= {2**63 - 1}"),
        (["--mem-limit-gib", "nan"], "--mem-limit-gib must be a finite number, got 'nan'"),
        (["--mem-limit-gib", "inf"], "--mem-limit-gib must be a finite number, got 'inf'"),
        (["--mem-limit-gib", "0"], "--mem-limit-gib must be > 0, got 0"),
        (["--mem-limit-gib", "-1"], "--mem-limit-gib must be > 0, got -1"),
        (["--noise-threshold", "-0.1"], "--noise-threshold must be > 0, got -0.1"),
    ],
)
def test_bad_sizes_are_refused_naming_the_option(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: Path("/proc/verl_spro_bench"), "cannot create the directory"),
        (lambda tmp: tmp / "file", "exists and is not a directory"),
        (lambda tmp: tmp / "file" / "sub", "cannot create the directory"),
        (lambda tmp: (tmp / "d" / "bench.csv").mkdir(parents=True) or tmp / "d", "bench.csv is a directory"),
    ],
)
def test_unusable_out_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture, make, message) -> None:
    (tmp_path / "file").write_text("x")
    out = make(tmp_path)
    assert main(["bench", "--out", str(out), "--quick"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing measured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(out) in lines[0], captured.err


def test_noisy_measurements_are_marked_and_warned() -> None:
    steady, noisy = [1.0e-3] * 5, [1.0e-3, 1.1e-3, 1.5e-3, 1.6e-3, 2.0e-3]  # median 50% above best
    assert bench.spread(steady) == 0.0
    assert bench.spread(noisy) == pytest.approx(0.5)
    quiet = bench.Combo("fp32", 64, 128, 8, times={m: steady for m in bench.METHODS})
    loud = bench.Combo("bf16", 64, 128, 8, times={**{m: steady for m in bench.METHODS}, "grpo": noisy})
    lines = bench.report([quiet, loud], threshold=0.25)
    row = {line.split()[0]: line.split() for line in lines[1:3]}
    assert row["fp32"][7] == "1.00" and row["bf16"][7] == "1.00?"  # spro/grpo: marked only where grpo is noisy
    assert row["bf16"][9] == "1.00"  # spro/read: both steady
    warning = [line for line in lines if line.startswith("WARNING")]
    assert len(warning) == 1 and "1 of 2 shape(s)" in warning[0] and "bf16 64x128 G=8 (grpo)" in warning[0]
    assert not [line for line in bench.report([quiet], threshold=0.25) if line.startswith("WARNING")]
    assert not [line for line in bench.report([loud], threshold=0.6) if line.startswith("WARNING")]
