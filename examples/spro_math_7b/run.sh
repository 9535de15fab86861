#!/usr/bin/env bash
# SPRO on Eurus-2-7B-SFT with PRIME's Eurus-2-RL-Data: prepare data, preflight, train (one node, 8 GPUs).
#
#   RAW_DIR=/data/Eurus-2-RL-Data bash examples/spro_math_7b/run.sh [extra Hydra overrides...]
#
# Environment:
#   RAW_DIR      directory with the downloaded dataset files (train.parquet, validation.parquet)
#   DATA_DIR     where the verl-ready parquet goes (default: ~/data/eurus2_rl)
#   CONFIG_NAME  a config in configs/ (default: spro_megatron_7b; spro_fsdp2_7b for FSDP2)
#   MODEL_PATH   model directory or HF id (default: the config's, PRIME-RL/Eurus-2-7B-SFT)
#   STAGE        all | data | check | train (default: all)
# verl-spro and python come from the active environment, else from the repository's .venv (examples/env.sh).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=examples/env.sh
source "${repo_root}/examples/env.sh"
examples_use_verl_spro_env "${repo_root}"
raw_dir="${RAW_DIR:-}"
data_dir="${DATA_DIR:-${HOME}/data/eurus2_rl}"
config_name="${CONFIG_NAME:-spro_megatron_7b}"
stage="${STAGE:-all}"

overrides=(
  "data.train_files=${data_dir}/train.parquet"
  "data.val_files=${data_dir}/validation.parquet"
)
if [[ -n "${MODEL_PATH:-}" ]]; then
  overrides+=("actor_rollout_ref.model.path=${MODEL_PATH}")
fi
overrides+=("$@")

prepare_data() {
  if [[ -z "${raw_dir}" ]]; then
    echo "RAW_DIR is not set: point it at the downloaded Eurus-2-RL-Data (or MATH/GSM8K) files" >&2
    exit 2
  fi
  mkdir -p "${data_dir}"
  # Every rejected row is listed in <output>.rejects.jsonl with its file, line and reason.
  verl-spro prepare-data "${raw_dir}/train.parquet" --split train -o "${data_dir}/train.parquet"
  verl-spro prepare-data "${raw_dir}/validation.parquet" --split test -o "${data_dir}/validation.parquet"
}

preflight() {
  verl-spro check --config-path "${repo_root}/configs" --config-name "${config_name}" "${overrides[@]}"
}

train() {
  # the single-node launcher runs the same check first (SPRO_SKIP_CHECK=1 skips it), then main_ppo
  "${repo_root}/scripts/train_single_node.sh" "${config_name}" "${overrides[@]}"
}

case "${stage}" in
  data) prepare_data ;;
  check) preflight ;;
  train) train ;;
  all)
    prepare_data
    train
    ;;
  *)
    echo "unknown STAGE=${stage} (all | data | check | train)" >&2
    exit 2
    ;;
esac
