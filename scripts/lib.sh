# shellcheck shell=bash
# Shared shell functions for the verl-spro launch scripts (sourced, never executed).
#
# Nothing here prints the environment or enables `set -x`: secrets such as WANDB_API_KEY
# come from the environment and must never reach a log.

# Repository root (parent of this file's directory).
SPRO_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SPRO_REPO_ROOT="$(cd "$SPRO_LIB_DIR/.." && pwd)"
export SPRO_REPO_ROOT

spro_log() {
    printf '[%s] %s\n' "$(date '+%H:%M:%S')" "$*" >&2
}

spro_die() {
    printf '[%s] ERROR: %s\n' "$(date '+%H:%M:%S')" "$*" >&2
    exit "${SPRO_DIE_CODE:-1}"
}

# The Python interpreter used for every Python step (default: the one on PATH; see spro_use_env).
spro_python() {
    printf '%s' "${SPRO_PYTHON:-python}"
}

# spro_use_env: find the environment verl-spro is installed in, as examples/env.sh does. Order: SPRO_PYTHON
# (its bin directory goes first on PATH when `verl-spro` is not on PATH); an active environment with `verl-spro` on
# PATH; the repository's .venv (scripts/setup_cpu.sh), put first on PATH; else stop with one line saying how.
spro_use_env() {
    if [[ -n "${SPRO_PYTHON:-}" ]]; then
        local bin
        bin="$(dirname "$SPRO_PYTHON")"
        if ! command -v verl-spro >/dev/null 2>&1 && [[ -x "$bin/verl-spro" ]]; then
            export PATH="$bin:$PATH"
        fi
        return 0
    fi
    command -v verl-spro >/dev/null 2>&1 && return 0
    if [[ -x "$SPRO_REPO_ROOT/.venv/bin/verl-spro" ]]; then
        export PATH="$SPRO_REPO_ROOT/.venv/bin:$PATH"
        return 0
    fi
    SPRO_DIE_CODE=127 spro_die "verl-spro is not installed here: activate the environment it is installed in" \
        "(pip install -e \"${SPRO_REPO_ROOT}[vllm,megatron]\"), create $SPRO_REPO_ROOT/.venv with scripts/setup_cpu.sh," \
        "or set SPRO_PYTHON to its python"
}

# spro_run_helper LABEL CMD...: run a helper command (not the script's last) so that SIGTERM / SIGINT to this
# script stop it within seconds, with a line naming LABEL; returns its exit status. (Bash alone would wait for
# the helper to finish before acting on the signal.)
spro_run_helper() {
    local label="$1" pid rc=0
    shift
    "$@" &
    pid=$!
    # shellcheck disable=SC2064  # expand now: the helper's label and PID
    trap "spro_log 'stopping $label (pid $pid) on SIGTERM'; kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; exit 143" TERM
    # shellcheck disable=SC2064
    trap "spro_log 'stopping $label (pid $pid) on Ctrl-C'; kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; exit 130" INT
    wait "$pid" || rc=$?
    trap - TERM INT
    return "$rc"
}

# spro_proc_start PID: when process PID started (`ps -o lstart`), empty when there is no such process. Recorded
# next to a PID file and compared before any signal: a PID reused by another process has another start time.
spro_proc_start() {
    ps -o lstart= -p "$1" 2>/dev/null | sed -e 's/^ *//' -e 's/ *$//' || true
}

# spro_has_override KEY ARGS...: true when a Hydra override for KEY is among ARGS
# (KEY=..., +KEY=..., ++KEY=..., ~KEY).
spro_has_override() {
    local key="$1" arg
    shift
    for arg in "$@"; do
        arg="${arg#++}"
        arg="${arg#+}"
        arg="${arg#\~}"
        if [[ "$arg" == "$key" || "$arg" == "$key="* ]]; then
            return 0
        fi
    done
    return 1
}

# spro_gpus_from_slurm: GPUs per node from SLURM's variables, empty when none is set.
# SLURM_GPUS_PER_NODE may look like "8", "a100:8" or "gpu:a100:8".
spro_gpus_from_slurm() {
    local v="${SLURM_GPUS_ON_NODE:-}"
    if [[ -z "$v" ]]; then
        v="${SLURM_GPUS_PER_NODE:-}"
        v="${v##*:}"
    fi
    if [[ "$v" =~ ^[0-9]+$ ]]; then
        printf '%s' "$v"
    fi
}

# spro_check_int NAME VALUE: die unless VALUE is a non-negative integer.
spro_check_int() {
    [[ "$2" =~ ^[0-9]+$ ]] || spro_die "$1 must be a non-negative integer, got '$2'"
}

# spro_run_preflight CONFIG_DIR CONFIG_NAME OVERRIDES...: the `verl-spro check` preflight, unless
# SPRO_SKIP_CHECK=1. SPRO_CHECK_CMD replaces the command (default: verl-spro check). The caller's array
# SPRO_PREFLIGHT_RUNNER, when set, prefixes it (slurm_train.sbatch: an srun step in the job's container).
spro_run_preflight() {
    local config_dir="$1" config_name="$2"
    shift 2
    if [[ "${SPRO_SKIP_CHECK:-0}" == "1" ]]; then
        spro_log "preflight: skipped (SPRO_SKIP_CHECK=1)"
        return 0
    fi
    local -a cmd
    read -r -a cmd <<<"${SPRO_CHECK_CMD:-verl-spro check}"
    spro_log "preflight: ${cmd[*]} --config-path $config_dir --config-name $config_name (+$# overrides)"
    if ! "${SPRO_PREFLIGHT_RUNNER[@]+"${SPRO_PREFLIGHT_RUNNER[@]}"}" "${cmd[@]}" --config-path "$config_dir" --config-name "$config_name" "$@"; then
        spro_die "preflight check failed for config '$config_name' (see above); fix the config or set SPRO_SKIP_CHECK=1 to bypass"
    fi
}

# spro_node_ip NODE: the IPv4 address other nodes reach NODE at. SPRO_RAY_HEAD_IP wins when set.
# A name resolving to loopback (Debian's 127.0.1.1 entry) falls back to `hostname -I` when run on NODE itself.
spro_node_ip() {
    local node="$1" ip=""
    ip="$(getent ahostsv4 "$node" 2>/dev/null | awk 'NR==1 {print $1}')" || true
    if [[ -z "$ip" || "$ip" == 127.* ]]; then
        local first
        first="$(hostname -I 2>/dev/null | awk '{print $1}')" || true
        if [[ -n "$first" ]]; then
            ip="$first"
        fi
    fi
    [[ -n "$ip" ]] || return 1
    printf '%s' "$ip"
}

# spro_ray_port_args BASE: fixed ports for one Ray node, so that several Ray nodes can share one IP.
# BASE+0 node manager, +1 object manager, +2 metrics, +3 dashboard agent grpc, +4 dashboard agent http,
# +5 runtime env agent, +10..+99 worker ports. Prints one flag per line.
spro_ray_port_args() {
    local base="$1"
    spro_check_int "port base" "$base"
    printf '%s\n' \
        "--node-manager-port=$((base + 0))" \
        "--object-manager-port=$((base + 1))" \
        "--metrics-export-port=$((base + 2))" \
        "--dashboard-agent-grpc-port=$((base + 3))" \
        "--dashboard-agent-listen-port=$((base + 4))" \
        "--runtime-env-agent-port=$((base + 5))" \
        "--min-worker-port=$((base + 10))" \
        "--max-worker-port=$((base + 99))"
}

# spro_ray_common_args NODE_NAME NODE_INDEX: prints (one per line) the `ray start` flags shared by head and
# workers, from the SPRO_RAY_* environment:
#   SPRO_RAY_TEMP_DIR   per-node temp dirs are "$SPRO_RAY_TEMP_DIR/<node>" (keep it short: unix socket paths)
#   SPRO_RAY_PORT_BASE  fixed per-node ports from BASE + 100*NODE_INDEX (several Ray nodes on one IP)
#   SPRO_RAY_NUM_CPUS / SPRO_RAY_NUM_GPUS   advertised resources (default: Ray's detection)
#   SPRO_RAY_START_ARGS extra flags, split on whitespace
spro_ray_common_args() {
    local node="$1" index="$2"
    printf '%s\n' "--disable-usage-stats"
    printf '%s\n' "--resources={\"spro_node:$node\": 1}"
    if [[ -n "${SPRO_RAY_TEMP_DIR:-}" ]]; then
        printf '%s\n' "--temp-dir=$SPRO_RAY_TEMP_DIR/$node"
    fi
    if [[ -n "${SPRO_RAY_PORT_BASE:-}" ]]; then
        spro_ray_port_args "$((SPRO_RAY_PORT_BASE + 100 * index))"
    fi
    if [[ -n "${SPRO_RAY_NUM_CPUS:-}" ]]; then
        printf '%s\n' "--num-cpus=$SPRO_RAY_NUM_CPUS"
    fi
    if [[ -n "${SPRO_RAY_NUM_GPUS:-}" ]]; then
        printf '%s\n' "--num-gpus=$SPRO_RAY_NUM_GPUS"
    elif [[ "${SPRO_CPU_BACKEND:-0}" == "1" ]]; then
        printf '%s\n' "--num-gpus=1" # the CPU backend's workers run on Ray's "GPU" bundles: one logical GPU
    fi
    if [[ -n "${SPRO_RAY_START_ARGS:-}" ]]; then
        local -a extra
        read -r -a extra <<<"$SPRO_RAY_START_ARGS"
        printf '%s\n' "${extra[@]}"
    fi
}

# spro_wait_port HOST PORT TIMEOUT: wait until a TCP connect to HOST:PORT succeeds.
spro_wait_port() {
    local host="$1" port="$2" timeout="$3" start
    start=$SECONDS
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        if ((SECONDS - start >= timeout)); then
            return 1
        fi
        sleep 0.5
    done
}

# spro_stop_pid PID TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL. Only for processes we started.
spro_stop_pid() {
    local pid="$1" timeout="$2" start
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    start=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS - start >= timeout)); then
            spro_log "process $pid still alive after ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
}

# spro_raise_nofile: soft open-files limit up to 65536 (Ray's large-cluster advice), capped by the hard limit;
# srun steps inherit it (SLURM propagates resource limits by default).
spro_raise_nofile() {
    local hard soft want=65536
    hard="$(ulimit -Hn)"
    soft="$(ulimit -Sn)"
    [[ "$soft" == "unlimited" ]] && return 0
    if [[ "$hard" != "unlimited" ]] && ((hard < want)); then
        want="$hard"
        spro_log "WARNING: the hard open-files limit is $hard, under the 65536 Ray advises; ask your admins to raise it"
    fi
    if ((soft < want)); then
        ulimit -Sn "$want" || spro_log "WARNING: could not raise the open-files limit to $want"
    fi
}

# Environment every Ray process should see; exported BEFORE `ray start` so that Ray workers inherit it.
# Site specifics (modules, NCCL_*, HF_HOME, WANDB_API_KEY, ...) go in SPRO_ENV_FILE, sourced here.
spro_export_env() {
    export PYTHONUNBUFFERED=1
    export HYDRA_FULL_ERROR=1
    export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
    export RAY_DEDUP_LOGS="${RAY_DEDUP_LOGS:-0}"
    export RAY_USAGE_STATS_ENABLED=0
    # Ray >= 2.5x: a head started while a token exists (~/.ray/auth_token, written by any local ray.init())
    # turns token auth on, but workers and drivers with RAY_AUTH_MODE unset do not, and are refused.
    # Decide once, here, for every process of the cluster. The token itself is never printed.
    if [[ -z "${RAY_AUTH_MODE:-}" ]]; then
        if [[ -n "${RAY_AUTH_TOKEN:-}" || -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]]; then
            export RAY_AUTH_MODE=token
        else
            export RAY_AUTH_MODE=disabled
        fi
    fi
    # SPRO_CPU_BACKEND=1: verl on CPUs only (tests, rehearsals): verl_spro.cpu_backend in every verl process
    # (cpu platform, gloo, hf_cpu rollout; see `verl-spro smoke`), one thread per process, no hub downloads.
    if [[ "${SPRO_CPU_BACKEND:-0}" == "1" ]]; then
        case ",${VERL_USE_EXTERNAL_MODULES:-}," in
        *,verl_spro.cpu_backend,*) ;;
        *) export VERL_USE_EXTERNAL_MODULES="${VERL_USE_EXTERNAL_MODULES:+$VERL_USE_EXTERNAL_MODULES,}verl_spro.cpu_backend" ;;
        esac
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
        export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
    fi
    if [[ -n "${SPRO_ENV_FILE:-}" ]]; then
        [[ -r "$SPRO_ENV_FILE" ]] || spro_die "SPRO_ENV_FILE=$SPRO_ENV_FILE is not readable"
        spro_log "sourcing SPRO_ENV_FILE=$SPRO_ENV_FILE (contents not shown)"
        # shellcheck disable=SC1090
        set -a && source "$SPRO_ENV_FILE" && set +a
    fi
}
