"""The committed figures' panels say what their y axes measure (drawn from the committed CSVs)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from verl_spro import demo, sweep

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_demo_panel_has_a_y_label():
    rows = pd.read_csv(DOCS / "demo" / "metrics.csv").to_dict("records")
    fig = demo.figure(rows, demo.Hyper())
    try:
        labels = [ax.get_ylabel() for ax in fig.axes]
        assert len(labels) == 4 and all(labels), labels
    finally:
        plt.close(fig)


def test_sweep_panels_say_which_way_is_better():
    fig = sweep.figure(pd.read_csv(DOCS / "sweep" / "summary.csv"))
    try:
        labels = {ax.get_title(): ax.get_ylabel() for ax in fig.axes}
        steps = next(label for title, label in labels.items() if "steps to target" in title)
        assert "up: SPRO slower, worse" in steps
        assert all("up: SPRO better" in label for title, label in labels.items() if "acc" in title)
    finally:
        plt.close(fig)


def test_the_sweep_default_output_folder_is_ignored_by_git():
    import argparse
    import shutil
    import subprocess

    import pytest

    repo = DOCS.parent
    if not (repo / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    default = parser.parse_args([]).out  # `verl-spro sweep`'s default --out, relative to where it runs
    r = subprocess.run(["git", "check-ignore", "-q", f"{default}/steps.csv"], cwd=repo)
    assert r.returncode == 0, f".gitignore does not cover the sweep's default output folder {default}/"
