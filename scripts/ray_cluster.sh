#!/bin/bash
# Ray cluster launcher for clusters without SLURM (bare metal, cloud VMs, Kubernetes pods).
#
#   on the head machine:    scripts/ray_cluster.sh head
#   on every other machine: scripts/ray_cluster.sh worker HEAD_IP:6379
#   then, on the head:      SPRO_NNODES=4 scripts/ray_cluster.sh train spro_fsdp2_7b [hydra overrides...]
#   when done, everywhere:  scripts/ray_cluster.sh stop
#
# Subcommands
#   head [--foreground]           start the Ray head here (fixed ports), print the address workers join
#   worker ADDR [--foreground]    join this machine to the head at ADDR (HOST:PORT; or env HEAD_ADDR)
#   wait                          wait (bounded) until SPRO_NNODES nodes and SPRO_NNODES*SPRO_GPUS_PER_NODE GPUs joined
#   smoke                         run one task on every node; checks `import verl` there knows the spro estimator
#   train [CONFIG] [OVERRIDES]    preflight check, wait, then python -m verl_spro.main_ppo on this cluster
#                                 with trainer.nnodes / trainer.n_gpus_per_node set (unless you override them)
#   status                        `ray status` of the cluster
#   stop                          stop the Ray node(s) this script started on this machine (by PID file)
#
# --foreground keeps `ray start --block` in the foreground (container entrypoints); otherwise the node runs
# in the background, its PID and log in SPRO_RAY_STATE_DIR.
#
# Environment (all optional)
#   SPRO_NNODES=1                 nodes expected by wait/train
#   SPRO_GPUS_PER_NODE            GPUs per node (default: `nvidia-smi -L` count on the head, else 8; 0 allowed)
#   SPRO_RAY_WAIT_TIMEOUT=300     seconds before wait/train give up, naming what is missing
#   SPRO_EXPECT_NODES             comma-separated node names wait must see (names: SPRO_NODE_NAME of each node)
#   SPRO_NODE_NAME                this node's name in the cluster (default: hostname -s)
#   SPRO_NODE_INDEX               picks the port block with SPRO_RAY_PORT_BASE (default 0 head, 1 worker)
#   SPRO_RAY_NODE_IP              this node's IP (default: resolved from the host name, then `hostname -I`)
#   SPRO_RAY_PORT=6379            the head's GCS port;  SPRO_RAY_DASHBOARD_PORT=8265
#   SPRO_RAY_INCLUDE_DASHBOARD    true/false: start the dashboard on the head (default: Ray's choice)
#   SPRO_RAY_PORT_BASE            fixed ports for the other Ray services (BASE + 100*index ...): needed to run
#                                 several Ray nodes on one IP
#   SPRO_RAY_TEMP_DIR             Ray temp dirs are $SPRO_RAY_TEMP_DIR/<node> (short path: unix sockets)
#   SPRO_RAY_NUM_CPUS, SPRO_RAY_NUM_GPUS, SPRO_RAY_START_ARGS   passed to `ray start`
#   SPRO_RAY_STATE_DIR            PID/log files (default /tmp/verl-spro-ray-$USER)
#   SPRO_CONFIG_DIR               config directory (default <repo>/configs); SPRO_SKIP_CHECK=1 skips preflight
#   SPRO_ENV_FILE                 file sourced before `ray start` (site env, secrets: never printed)
#   SPRO_PYTHON                   the interpreter (default: the active environment's, else <repo>/.venv's)
#   SPRO_CPU_BACKEND=1            verl on CPUs (verl_spro.cpu_backend everywhere, one logical GPU per node): tests
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
spro_use_env

STATE_DIR="${SPRO_RAY_STATE_DIR:-/tmp/verl-spro-ray-${USER:-$(id -un)}}"
RAY_PORT="${SPRO_RAY_PORT:-6379}"
DASHBOARD_PORT="${SPRO_RAY_DASHBOARD_PORT:-8265}"
WAIT_TIMEOUT="${SPRO_RAY_WAIT_TIMEOUT:-300}"
NODE_NAME="${SPRO_NODE_NAME:-$(hostname -s)}"
PY="$(spro_python)"
TOOLS="$SPRO_LIB_DIR/ray_tools.py"
spro_check_int SPRO_RAY_PORT "$RAY_PORT"
spro_check_int SPRO_RAY_WAIT_TIMEOUT "$WAIT_TIMEOUT"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

node_ip() {
    if [[ -n "${SPRO_RAY_NODE_IP:-}" ]]; then
        printf '%s' "$SPRO_RAY_NODE_IP"
    else
        spro_node_ip "$(hostname -s)" || spro_die "cannot find this node's IP; set SPRO_RAY_NODE_IP"
    fi
}

head_address() {
    if [[ -n "${RAY_ADDRESS:-}" ]]; then
        printf '%s' "$RAY_ADDRESS"
    elif [[ -r "$STATE_DIR/head_address" ]]; then
        cat "$STATE_DIR/head_address"
    else
        printf '%s:%s' "$(node_ip)" "$RAY_PORT"
    fi
}

gpus_per_node() {
    if [[ -n "${SPRO_GPUS_PER_NODE:-}" ]]; then
        printf '%s' "$SPRO_GPUS_PER_NODE"
    elif [[ "${SPRO_CPU_BACKEND:-0}" == "1" ]]; then
        printf '%s' "${SPRO_RAY_NUM_GPUS:-1}" # the logical GPU(s) each node lends Ray (scripts/lib.sh)
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        printf '8'
    fi
}

# node_pid_is_ours PIDFILE: true when the PID in PIDFILE is still the `ray start` this script started (same start
# time as recorded beside the file, a `ray start` command line); otherwise prints why not and returns 1.
node_pid_is_ours() {
    local pidfile="$1" pid started now args
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || { printf 'it holds no PID (%q)' "$pid"; return 1; }
    now="$(spro_proc_start "$pid")"
    [[ -n "$now" ]] || { printf 'pid %s is not running' "$pid"; return 1; }
    started="$(cat "${pidfile%.pid}.started" 2>/dev/null || true)"
    if [[ -z "$started" ]]; then
        printf 'no start time was recorded for pid %s (an older launcher?): stop it yourself if it is your Ray node' "$pid"
        return 1
    fi
    if [[ "$now" != "$started" ]]; then
        printf 'pid %s is now another process (started %s, the Ray node started %s)' "$pid" "$now" "$started"
        return 1
    fi
    args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
    if [[ "$args" != *ray* || "$args" != *start* ]]; then
        printf "pid %s is not a 'ray start' (%s)" "$pid" "${args%% *}"
        return 1
    fi
}

# start_node ROLE FOREGROUND RAY_ARGS...: `ray start --block`, in the foreground or as a tracked background process.
start_node() {
    local role="$1" foreground="$2"
    shift 2
    local pidfile="$STATE_DIR/$role-$NODE_NAME.pid" log="$STATE_DIR/$NODE_NAME.log"
    local -a common
    mapfile -t common < <(spro_ray_common_args "$NODE_NAME" "${SPRO_NODE_INDEX:-$([[ $role == head ]] && echo 0 || echo 1)}")
    if [[ -n "${SPRO_RAY_TEMP_DIR:-}" ]]; then
        mkdir -p "$SPRO_RAY_TEMP_DIR/$NODE_NAME"
    fi
    if [[ "$foreground" == "1" ]]; then
        spro_log "ray start ($role, node $NODE_NAME) in the foreground"
        exec ray start --block "$@" "${common[@]}"
    fi
    mkdir -p "$STATE_DIR"
    if [[ -r "$pidfile" ]] && node_pid_is_ours "$pidfile" >/dev/null; then
        spro_die "a Ray node '$NODE_NAME' started by this script is already running (pid $(cat "$pidfile")); run '$0 stop' first"
    fi
    # setsid: the node survives this shell and its terminal; `stop` ends it by PID, after checking that the PID
    # still names the process started here (its start time, recorded next to the PID file, and `ray start`).
    setsid ray start --block "$@" "${common[@]}" >"$log" 2>&1 </dev/null &
    echo "$!" >"$pidfile"
    spro_proc_start "$!" >"${pidfile%.pid}.started"
    spro_log "ray start ($role, node $NODE_NAME): pid $!, log $log"
}

cmd_head() {
    local foreground=0
    [[ "${1:-}" == "--foreground" ]] && foreground=1
    local ip
    ip="$(node_ip)"
    mkdir -p "$STATE_DIR"
    printf '%s:%s' "$ip" "$RAY_PORT" >"$STATE_DIR/head_address"
    local -a dash=(--dashboard-host=0.0.0.0 --dashboard-port="$DASHBOARD_PORT")
    [[ -z "${SPRO_RAY_INCLUDE_DASHBOARD:-}" ]] || dash+=("--include-dashboard=$SPRO_RAY_INCLUDE_DASHBOARD")
    start_node head "$foreground" --head --node-ip-address="$ip" --port="$RAY_PORT" "${dash[@]}"
    if ! spro_wait_port "$ip" "$RAY_PORT" "$WAIT_TIMEOUT"; then
        tail -n 30 "$STATE_DIR/$NODE_NAME.log" >&2 || true
        spro_die "the Ray head did not open $ip:$RAY_PORT within ${WAIT_TIMEOUT}s (log above)"
    fi
    spro_log "Ray head up at $ip:$RAY_PORT; on each worker run: $0 worker $ip:$RAY_PORT"
}

cmd_worker() {
    local addr="${HEAD_ADDR:-}" foreground=0 arg
    for arg in "$@"; do
        case "$arg" in
        --foreground) foreground=1 ;;
        *) addr="$arg" ;;
        esac
    done
    [[ -n "$addr" ]] || spro_die "worker needs the head's address: $0 worker HEAD_IP:PORT (or HEAD_ADDR=...)"
    [[ "$addr" == *:* ]] || addr="$addr:$RAY_PORT"
    local head_host="${addr%:*}" head_port="${addr##*:}"
    if ! spro_wait_port "$head_host" "$head_port" "$WAIT_TIMEOUT"; then
        spro_die "no Ray head answers at $addr after ${WAIT_TIMEOUT}s (is '$0 head' running there? firewall?)"
    fi
    if [[ "$foreground" == "1" ]]; then
        start_node worker 1 --address="$addr" --node-ip-address="$(node_ip)"
    fi
    mkdir -p "$STATE_DIR"
    printf '%s' "$addr" >"$STATE_DIR/head_address"
    start_node worker 0 --address="$addr" --node-ip-address="$(node_ip)"
    # Return once this node has joined, or fail with its log (never hang: bounded by SPRO_RAY_WAIT_TIMEOUT).
    if ! spro_run_helper "the wait for this node" "$PY" "$TOOLS" wait --address "$addr" --expect-nodes "$NODE_NAME" --timeout "$WAIT_TIMEOUT" \
        --watch "$NODE_NAME=$(cat "$STATE_DIR/worker-$NODE_NAME.pid")" --log-dir "$STATE_DIR"; then
        tail -n 30 "$STATE_DIR/$NODE_NAME.log" >&2 || true
        spro_die "the Ray worker '$NODE_NAME' did not join $addr (its log above)"
    fi
}

cmd_wait() {
    local nnodes="${SPRO_NNODES:-1}" gpn
    gpn="$(gpus_per_node)"
    spro_check_int SPRO_NNODES "$nnodes"
    spro_check_int SPRO_GPUS_PER_NODE "$gpn"
    spro_run_helper "the wait for the cluster" "$PY" "$TOOLS" wait --address "$(head_address)" --num-nodes "$nnodes" --gpus "$((nnodes * gpn))" \
        --expect-nodes "${SPRO_EXPECT_NODES:-}" --timeout "$WAIT_TIMEOUT" --log-dir "$STATE_DIR"
}

cmd_smoke() {
    # exec: a signal to this script reaches the smoke job itself, which stops at once.
    exec "$PY" "$TOOLS" smoke --address "$(head_address)" --expect-nodes "${SPRO_EXPECT_NODES:-}" \
        --estimator "${SPRO_SMOKE_ESTIMATOR:-spro}" --timeout "$WAIT_TIMEOUT"
}

cmd_train() {
    local config_name="${SPRO_CONFIG_NAME:-spro_fsdp2_7b}"
    if [[ $# -gt 0 && "$1" != *=* && "$1" != -* ]]; then
        config_name="$1"
        shift
    fi
    local config_dir
    config_dir="$(cd "${SPRO_CONFIG_DIR:-$SPRO_REPO_ROOT/configs}" 2>/dev/null && pwd)" ||
        spro_die "config directory ${SPRO_CONFIG_DIR:-$SPRO_REPO_ROOT/configs} does not exist"
    local nnodes="${SPRO_NNODES:-1}" gpn
    gpn="$(gpus_per_node)"
    spro_run_preflight "$config_dir" "$config_name" "$@"
    cmd_wait
    local -a auto=()
    spro_has_override trainer.nnodes "$@" || auto+=("trainer.nnodes=$nnodes")
    spro_has_override trainer.n_gpus_per_node "$@" || auto+=("trainer.n_gpus_per_node=$gpn")
    RAY_ADDRESS="$(head_address)"
    export RAY_ADDRESS
    spro_log "training: config $config_name, ${auto[*]:-} (+$# overrides) on Ray at $RAY_ADDRESS"
    exec "$PY" -m verl_spro.main_ppo --config-path="$config_dir" --config-name="$config_name" "$@" "${auto[@]}"
}

cmd_stop() {
    local pidfile found=0
    [[ -d "$STATE_DIR" ]] || { spro_log "nothing to stop ($STATE_DIR does not exist)"; return 0; }
    # Workers first: a worker whose head is gone drains for a long time before it exits.
    for pidfile in "$STATE_DIR"/worker-*.pid "$STATE_DIR"/head-*.pid; do
        [[ -e "$pidfile" ]] || continue
        found=1
        local pid name why
        pid="$(cat "$pidfile")"
        name="$(basename "$pidfile" .pid)"
        if why="$(node_pid_is_ours "$pidfile")"; then
            spro_log "stopping Ray ${name%%-*} node ${name#*-} (pid $pid)"
            spro_stop_pid "$pid" "${SPRO_TEARDOWN_TIMEOUT:-30}"
        else
            spro_log "stale PID file $pidfile: $why; removed, nothing signalled"
        fi
        rm -f "$pidfile" "${pidfile%.pid}.started"
    done
    rm -f "$STATE_DIR/head_address"
    [[ "$found" == 1 ]] || spro_log "no Ray node started by this script in $STATE_DIR"
}

main() {
    local sub="${1:-}"
    [[ $# -gt 0 ]] && shift
    # Before any `ray start` or driver: the environment every Ray process inherits.
    spro_export_env
    case "$sub" in
    head) cmd_head "$@" ;;
    worker) cmd_worker "$@" ;;
    wait) cmd_wait ;;
    smoke) cmd_smoke ;;
    train) cmd_train "$@" ;;
    status) ray status --address "$(head_address)" ;;
    stop) cmd_stop ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
