#!/usr/bin/env python3
"""Ray helpers for the launch scripts: wait for a cluster to assemble, and a CPU-sized smoke job.

    python scripts/ray_tools.py wait  --address HEAD:PORT --expect-nodes n1,n2 --gpus 16 --timeout 300
    python scripts/ray_tools.py smoke --address HEAD:PORT --expect-nodes n1,n2 --estimator spro

Nodes are named by the ``spro_node:<name>`` custom resource that scripts/lib.sh gives every `ray start`
(falling back to the short hostname), so a missing node is reported by its SLURM/host name.
Exit codes: 0 ready/ok, 2 a watched Ray process died, 3 timeout, 4 smoke check failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

NODE_PREFIX = "spro_node:"
#: The smoke job checks a running cluster: a head that does not answer within this many seconds is not there.
SMOKE_HEAD_WAIT_S = 5.0


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _pid_alive(pid: int) -> bool:
    """True while PID exists and is not a zombie (an exited but unreaped child still answers kill -0)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _node_name(node: dict) -> str:
    for key in node.get("Resources", {}):
        if key.startswith(NODE_PREFIX):
            return key[len(NODE_PREFIX) :]
    return str(node.get("NodeManagerHostname", "?")).split(".")[0]


def _head_answers(address: str, seconds: float) -> bool:
    """True once a TCP connection to the head's HOST:PORT succeeds within ``seconds`` (True for "auto": Ray finds
    the address itself). Ray's own connect to a dead address retries for about a minute, printing warnings."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return True
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def _connect(address: str, deadline: float) -> None:
    import ray

    if not _head_answers(address, max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"no Ray head at {address}")
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, namespace="spro-launch")
            return
        except Exception as e:  # the head may not accept connections yet
            last = e
            time.sleep(1.0)
    raise TimeoutError(f"could not connect to the Ray head at {address}: {last}")


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def cmd_wait(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    expected = [n for n in args.expect_nodes.split(",") if n] if args.expect_nodes else []
    want_nodes = max(args.num_nodes or 0, len(expected))
    watch: dict[str, int] = {}
    for item in args.watch:
        name, _, pid = item.partition("=")
        watch[name] = int(pid)
    try:
        _connect(args.address, deadline)
    except TimeoutError as e:
        _log(f"ERROR: {e} (after {args.timeout:.0f}s)")
        return 3
    last_report = 0.0
    while True:
        for name, pid in watch.items():
            if not _pid_alive(pid):
                _log(
                    f"ERROR: the Ray process for node {name} (pid {pid}) exited before the cluster was complete; "
                    f"see its log in {args.log_dir or 'the log directory'}"
                )
                return 2
        nodes = _alive_nodes()
        joined = sorted({_node_name(n) for n in nodes})
        gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
        missing = [n for n in expected if n not in joined]
        if not missing and len(nodes) >= want_nodes and gpus >= args.gpus:
            _log(f"Ray cluster ready: {len(nodes)} node(s) {joined}, {gpus:g} GPU(s)")
            return 0
        now = time.monotonic()
        if now >= deadline:
            parts = [f"{len(nodes)}/{want_nodes} node(s) joined {joined}"]
            if missing:
                parts.append(f"missing node(s): {', '.join(missing)}")
            if gpus < args.gpus:
                parts.append(f"{gpus:g}/{args.gpus:g} GPU(s) visible to Ray")
            _log(
                f"ERROR: Ray cluster incomplete after {args.timeout:.0f}s: "
                + "; ".join(parts)
                + (f"; check the per-node logs in {args.log_dir}" if args.log_dir else "")
            )
            return 3
        if now - last_report >= 10:
            _log(
                f"waiting for Ray: {len(nodes)}/{want_nodes} node(s) {joined}, {gpus:g}/{args.gpus:g} GPU(s)"
                + (f", missing {', '.join(missing)}" if missing else "")
            )
            last_report = now
        time.sleep(1.0)


def _probe(estimator: str) -> dict:
    """Runs inside a Ray worker process: does `import verl` there know the estimator?"""
    import verl
    from verl.trainer.ppo import core_algos

    try:
        fn = core_algos.get_adv_estimator_fn(estimator)
        found = callable(fn)
    except Exception:
        found = False
    try:
        import verl_spro

        spro_version = verl_spro.__version__
    except Exception:
        spro_version = None
    return {
        "hostname": socket.gethostname(),
        "ip": __import__("ray").util.get_node_ip_address(),
        "pid": os.getpid(),
        "verl": getattr(verl, "__version__", "?"),
        "verl_spro": spro_version,
        "estimator_found": found,
    }


def cmd_smoke(args: argparse.Namespace) -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not _head_answers(args.address, SMOKE_HEAD_WAIT_S):
        _log(f"SMOKE FAILED: no Ray head at {args.address} (start one with `scripts/ray_cluster.sh head`)")
        return 3
    deadline = time.monotonic() + args.timeout
    _connect(args.address, deadline)
    nodes = _alive_nodes()
    expected = [n for n in args.expect_nodes.split(",") if n] if args.expect_nodes else []
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = {
        _node_name(n): probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        ).remote(args.estimator)
        for n in nodes
    }
    remaining = max(1.0, deadline - time.monotonic())
    results = dict(zip(refs, ray.get(list(refs.values()), timeout=remaining), strict=True))
    ok = True
    for name in sorted(results):
        r = results[name]
        status = "registered" if r["estimator_found"] else "MISSING"
        _log(
            f"SMOKE node={name} hostname={r['hostname']} ip={r['ip']} pid={r['pid']} verl={r['verl']} "
            f"verl_spro={r['verl_spro']} estimator[{args.estimator}]={status}"
        )
        ok &= bool(r["estimator_found"])
    missing = [n for n in expected if n not in results]
    if missing:
        _log(f"SMOKE FAILED: no Ray node for {', '.join(missing)}")
        return 4
    if not ok:
        _log(
            f"SMOKE FAILED: adv estimator '{args.estimator}' unknown to verl in a Ray worker "
            "(is verl-spro installed in the environment every node uses?)"
        )
        return 4
    _log(f"SMOKE OK: {len(results)} node(s), estimator '{args.estimator}' registered in a Ray worker on each")
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "ray_tools"
    _log(f"stopped by SIGTERM ({what}); the Ray cluster itself keeps running")
    os._exit(143)  # not sys.exit: a Ray call in progress would swallow it, and there is nothing to clean up here


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("wait", "smoke"):
        s = sub.add_parser(name)
        s.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"))
        s.add_argument("--expect-nodes", default="", help="comma-separated node names that must have joined")
        s.add_argument("--timeout", type=float, default=300.0)
        if name == "wait":
            s.add_argument("--num-nodes", type=int, default=0, help="minimum number of alive nodes")
            s.add_argument("--gpus", type=float, default=0.0, help="minimum total GPUs in the cluster")
            s.add_argument(
                "--watch",
                action="append",
                default=[],
                metavar="NODE=PID",
                help="fail at once when PID (the process running Ray for NODE) has exited",
            )
            s.add_argument("--log-dir", default="")
        else:
            s.add_argument("--estimator", default="spro")
    args = p.parse_args(argv)
    return cmd_wait(args) if args.cmd == "wait" else cmd_smoke(args)


if __name__ == "__main__":
    sys.exit(main())
