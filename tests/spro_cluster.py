"""Shared by the multi-node tests (test_slurm.py, test_ray_shipping.py, test_launch_scripts.py): a smoke-sized spro
run for a Ray cluster, and the environment of a Ray cluster on 127.0.0.1 started by scripts/ray_cluster.sh."""

from __future__ import annotations

import argparse
from pathlib import Path

from verl_spro import smoke

#: 4 prompts x 4 samples over 2 ranks is 8 samples a rank: micro-batches of 8 (smoke's 16 fit one rank only).
TWO_RANK_OVERRIDES = [
    f"actor_rollout_ref.{key}_micro_batch_size_per_gpu=8" for key in ("actor.ppo", "rollout.log_prob", "ref.log_prob")
]


def two_rank_overrides(out: Path, steps: int, resume: bool) -> list[str]:
    """Build smoke's model and task in OUT; main_ppo overrides for STEPS steps of spro over 2 ranks on a cluster.

    Through smoke's own option parser (`verl-spro smoke --out OUT --steps N [--resume] --print-overrides`).
    """
    parser = argparse.ArgumentParser()
    smoke.add_arguments(parser)
    args = parser.parse_args(["--out", str(out), "--steps", str(steps), *(["--resume"] if resume else [])])
    return smoke.merge_overrides(smoke.cluster_overrides(out.resolve(), args), TWO_RANK_OVERRIDES)


def local_ray_env(base: Path, port: int, num_cpus: int, object_store_bytes: int, wait_timeout_s: int) -> dict[str, str]:
    """scripts/ray_cluster.sh's settings for Ray nodes on 127.0.0.1 under BASE: ports from PORT (GCS, dashboard,
    and the node ports from PORT+100), its temp dir BASE/r, no dashboard, NUM_CPUS a node."""
    return {
        "SPRO_RAY_TEMP_DIR": str(base / "r"),
        "SPRO_RAY_PORT": str(port),
        "SPRO_RAY_DASHBOARD_PORT": str(port + 1),
        "SPRO_RAY_PORT_BASE": str(port + 100),
        "SPRO_RAY_NODE_IP": "127.0.0.1",
        "SPRO_RAY_NUM_CPUS": str(num_cpus),
        "SPRO_RAY_INCLUDE_DASHBOARD": "false",
        "SPRO_RAY_START_ARGS": f"--object-store-memory={object_store_bytes}",
        "SPRO_RAY_WAIT_TIMEOUT": str(wait_timeout_s),
    }
