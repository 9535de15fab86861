"""verl's CPU-only platform notice is quiet in verl-spro's tools, where it says nothing (main_ppo keeps it:
tests/test_resources.py)."""

from __future__ import annotations

import subprocess
import sys

from verl_spro.hydra_compose import REPO_CONFIG_DIR

NOTICES = ("No supported accelerator detected", "This may be due to this ray actor being a CPU-only actor")


def test_a_tool_that_loads_verl_prints_no_cpu_only_notice():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl_spro.cli",
            "check",
            f"--config-path={REPO_CONFIG_DIR}",
            "--config-name=spro_fsdp2_7b",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "verl validate_config  passed" in r.stdout  # it did load verl's config machinery
    assert not any(notice in r.stdout + r.stderr for notice in NOTICES), r.stderr[-2000:]
