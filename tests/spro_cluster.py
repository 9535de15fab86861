"""Shared by the multi-node tests (test_slurm.py, test_ray_shipping.py): a smoke-sized spro run for a Ray cluster."""

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
