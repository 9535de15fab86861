#!/bin/bash
# Set up verl-spro on a CPU machine, from a clean clone: a virtualenv with the CPU build of torch, verl 0.9.1
# (with its verl-core runtime deps) and this package with its test and CPU Megatron (megatron-cpu) extras.
#
#   bash scripts/setup_cpu.sh            # creates ./.venv
#   VENV=/path/to/venv bash scripts/setup_cpu.sh
#   bash scripts/setup_cpu.sh --with-slurm   # also apt-installs slurm-wlm, munge and shellcheck (root) for tests
#
# GPU machines: install torch for your CUDA, then `pip install -e ".[vllm,megatron]"` instead.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
with_slurm=0
for arg in "$@"; do
    case "$arg" in
        --with-slurm) with_slurm=1 ;;
        *) echo "setup_cpu.sh: unknown option '$arg' (known: --with-slurm)" >&2; exit 2 ;;
    esac
done

if [ "$with_slurm" = 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup_cpu.sh: --with-slurm needs root (apt-get install slurm-wlm munge shellcheck)" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge shellcheck iproute2 util-linux >/dev/null
fi

python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# The CPU build first: a later requirement `torch>=...` is then already satisfied and no CUDA build is pulled.
"${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q "verl[verl-core]==0.9.1"
"${pip[@]}" install -q -e "${repo}[test,megatron-cpu]"
# verl-core pulls torchcodec, whose wheel needs FFmpeg/CUDA libraries a CPU box may lack; nothing here uses it.
if ! "$venv/bin/python" -c "import torchcodec" >/dev/null 2>&1; then
    "${pip[@]}" uninstall -q -y torchcodec
fi
"$venv/bin/python" -c "import verl, verl_spro; from verl.trainer.ppo.core_algos import get_adv_estimator_fn; \
get_adv_estimator_fn('spro'); print('verl', verl.__version__, '+ verl-spro', verl_spro.__version__, 'ready in $venv')"

