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
    # 2 dtypes x 2 batch sizes, each with every method, all measured.
    assert len(rows) == 2 * 2 * len(bench.METHODS)
    assert {row["method"] for row in rows} == set(bench.METHODS)
    assert {row["dtype"] for row in rows} == {"fp32", "bf16"}
    for row in rows:
        assert row["status"] == "ok", row
        assert int(row["repeats"]) == 2
        assert float(row["best_ms"]) <= float(row["median_ms"])
        if row["peak_extra_bytes"]:
            assert int(row["peak_extra_bytes"]) >= 0
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
    ],
)
def test_bad_sizes_are_refused_naming_the_option(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
