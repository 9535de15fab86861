#!/bin/bash
# Single-node SPRO training with verl (Ray starts inside verl, on this machine only).
#
#   scripts/train_single_node.sh [CONFIG_NAME] [HYDRA OVERRIDES...]
#   scripts/train_single_node.sh spro_fsdp2_7b data.train_files=/data/math/train.parquet trainer.total_epochs=2
#
# Runs the preflight `verl-spro check` on the same config and overrides, then
#   python -m verl_spro.main_ppo --config-path=<repo>/configs --config-name=CONFIG_NAME \
#       OVERRIDES... trainer.nnodes=1 [trainer.n_gpus_per_node=N]
# trainer.nnodes / trainer.n_gpus_per_node are only added when you did not give them yourself. Hydra flags
# pass through too, placed before the overrides as Hydra wants (e.g. `--cfg job` prints the composed config).
#
# Environment (all optional)
#   SPRO_CONFIG_NAME=spro_fsdp2_7b   used when no CONFIG_NAME argument (a first argument without '=')
#   SPRO_CONFIG_DIR=<repo>/configs    where CONFIG_NAME.yaml lives
#   SPRO_GPUS_PER_NODE                GPUs to use (default: `nvidia-smi -L` count; none: the config's value)
#   SPRO_SKIP_CHECK=1                 skip the preflight; SPRO_CHECK_CMD replaces `verl-spro check`
#   SPRO_ENV_FILE                     file sourced first (site env, secrets: never printed)
#   SPRO_PYTHON=python                the interpreter (default: the active environment's, else <repo>/.venv's)
#   SPRO_DRY_RUN=1                    print the command (one argument per line) instead of running it
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
spro_use_env

config_name="${SPRO_CONFIG_NAME:-spro_fsdp2_7b}"
if [[ $# -gt 0 && "$1" != *=* && "$1" != -* ]]; then
    config_name="$1"
    shift
fi
config_dir="${SPRO_CONFIG_DIR:-$SPRO_REPO_ROOT/configs}"
config_dir="$(cd "$config_dir" 2>/dev/null && pwd)" || spro_die "config directory ${SPRO_CONFIG_DIR:-$SPRO_REPO_ROOT/configs} does not exist"
if [[ ! -r "$config_dir/$config_name.yaml" ]]; then
    available=("$config_dir"/*.yaml)
    available=("${available[@]##*/}")
    spro_die "no config '$config_name' ($config_dir/$config_name.yaml); available: ${available[*]%.yaml}"
fi

gpus="${SPRO_GPUS_PER_NODE:-}"
if [[ -z "$gpus" ]] && command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
fi

auto=()
spro_has_override trainer.nnodes "$@" || auto+=("trainer.nnodes=1")
if [[ -n "$gpus" && "$gpus" != "0" ]] && ! spro_has_override trainer.n_gpus_per_node "$@"; then
    spro_check_int SPRO_GPUS_PER_NODE "$gpus"
    auto+=("trainer.n_gpus_per_node=$gpus")
fi

cmd=("$(spro_python)" -m verl_spro.main_ppo --config-path="$config_dir" --config-name="$config_name" "$@" "${auto[@]}")
if [[ "${SPRO_DRY_RUN:-0}" == "1" ]]; then
    printf '%s\n' "${cmd[@]}"
    exit 0
fi

spro_export_env
# Hydra flags (--cfg, --help, --info) only print: no preflight for them.
case " $* " in
*" --cfg "* | *" -c "* | *" --help "* | *" --hydra-help "* | *" --info "*) ;;
*) spro_run_preflight "$config_dir" "$config_name" "$@" ;;
esac
spro_log "training: config $config_name ${auto[*]:-} (+$# overrides)"
exec "${cmd[@]}"
