# shellcheck shell=bash
# Sourced by the examples' run.sh (never executed): puts the environment verl-spro is installed in first on
# PATH, so that `verl-spro`, and the `python` the launchers in scripts/ run, are that environment's.
#
# Order: an active environment with `verl-spro` on PATH; else the repository's .venv (scripts/setup_cpu.sh);
# else stop with what to do.
examples_use_verl_spro_env() {
    local repo_root="$1"
    if command -v verl-spro >/dev/null 2>&1; then
        return 0
    fi
    if [[ -x "${repo_root}/.venv/bin/verl-spro" ]]; then
        export PATH="${repo_root}/.venv/bin:${PATH}"
        return 0
    fi
    echo "verl-spro is not installed here: activate the environment it is installed in" \
        "(pip install -e \"${repo_root}[vllm,megatron]\"), or create ${repo_root}/.venv with scripts/setup_cpu.sh" >&2
    exit 127
}
