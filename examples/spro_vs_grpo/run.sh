#!/usr/bin/env bash
# A/B: SPRO and its GRPO twin, same config, data and seeds; only algorithm.adv_estimator differs.
# The two runs go one after the other on the same node (each needs all 8 GPUs).
#
#   bash examples/spro_vs_grpo/run.sh [extra Hydra overrides for both runs...]
#
# Environment:
#   SHAPE     megatron_7b | fsdp2_7b (default: megatron_7b); runs spro_$SHAPE, grpo_$SHAPE on this node
#             (multi-node shapes: submit spro_/grpo_megatron_32b_4node with scripts/slurm_train.sbatch)
#   DATA_DIR  verl-ready parquet from `verl-spro prepare-data` (default: ~/data/eurus2_rl)
#   SEED      seed for data order, rollout sampling and Megatron init (default: 42)
#   STEPS     training steps per run (default: 200)
#   ORDER     "spro grpo" (default) or "grpo spro"
# verl-spro and python come from the active environment, else from the repository's .venv (examples/env.sh).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=examples/env.sh
source "${repo_root}/examples/env.sh"
examples_use_verl_spro_env "${repo_root}"
shape="${SHAPE:-megatron_7b}"
data_dir="${DATA_DIR:-${HOME}/data/eurus2_rl}"
seed="${SEED:-42}"
steps="${STEPS:-200}"
read -r -a order <<<"${ORDER:-spro grpo}"

common=(
  "data.train_files=${data_dir}/train.parquet"
  "data.val_files=${data_dir}/validation.parquet"
  "data.seed=${seed}"
  "actor_rollout_ref.actor.data_loader_seed=${seed}"
  "actor_rollout_ref.rollout.seed=${seed}"
  "trainer.total_training_steps=${steps}"
  "trainer.project_name=verl_spro_ab"
)
if [[ "${shape}" == megatron* ]]; then
  common+=("actor_rollout_ref.actor.megatron.seed=${seed}")
fi
common+=("$@")

for estimator in "${order[@]}"; do
  config_name="${estimator}_${shape}"
  echo "=== ${config_name} (seed ${seed}, ${steps} steps) ==="
  # runs `verl-spro check` first, then main_ppo with trainer.nnodes / n_gpus_per_node filled in
  "${repo_root}/scripts/train_single_node.sh" "${config_name}" "${common[@]}"
done
