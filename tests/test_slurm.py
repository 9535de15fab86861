"""scripts/slurm_train.sbatch on a real two-node SLURM cluster, brought up on this machine.

Each SLURM node is a network namespace with its own IP, hostname and /etc/hosts (joined to the host by a
bridge), running its own slurmd; slurmctld and munged run on the host. Jobs therefore see two distinct
hosts, as on a real cluster, and the Ray head and worker talk over TCP between them.

Needs root, slurm-wlm, munge, iproute2 (`ip`), util-linux (`nsenter`, `unshare`); skipped otherwise.
Every daemon and namespace is torn down by PID file / by name of what this fixture created.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from spro_cluster import two_rank_overrides

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SBATCH_SCRIPT = REPO / "scripts" / "slurm_train.sbatch"
NODES = ("n1", "n2")
NODE_CPUS = 8  # per node (SlurmdParameters=config_overrides); steps and `ray start` get --cpus-per-task
NEEDED = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol", "sinfo", "ip", "nsenter", "unshare")


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (slurmd, munged, network namespaces)"
    missing = [b for b in NEEDED if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"missing binaries {missing}: apt-get install -y slurm-wlm munge iproute2 util-linux"
    if not Path("/etc/munge/munge.key").exists() and shutil.which("mungekey") is None:
        return "no munge key and no mungekey to create one"
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network/UTS/mount namespaces here (CAP_SYS_ADMIN, CAP_NET_ADMIN): {probe.stderr.strip()}"
    return None


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def _wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _kill_pid(pid: int, timeout: float = 10.0) -> None:
    if not _pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not _pid_alive(pid), timeout, f"pid {pid} to exit")
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SlurmCluster:
    """A two-node SLURM cluster in network namespaces; see the module docstring."""

    def __init__(self) -> None:
        # Short base directory: munge's and Ray's unix socket paths must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="spsl", dir="/tmp"))
        tag = f"{os.getpid() % 100000}"
        self.bridge = f"spb{tag}"
        self.netns = {n: f"sp{tag}{n}" for n in NODES}
        octet = random.randint(16, 250)
        self.subnet = f"10.213.{octet}"
        self.ctl_ip = f"{self.subnet}.1"
        self.node_ip = {n: f"{self.subnet}.{11 + i}" for i, n in enumerate(NODES)}
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._links: list[str] = []
        self.bring_up_s = 0.0

    # -- bring-up ------------------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        self._network()
        self._munge()
        self._slurm()
        self.bring_up_s = time.monotonic() - t0

    def _network(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _run("ip", "addr", "add", f"{self.ctl_ip}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i, n in enumerate(NODES):
            ns = self.netns[n]
            host_end, ns_end = f"{self.bridge}h{i}", f"{self.bridge}n{i}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            self._links.append(host_end)
            _run("ip", "link", "set", ns_end, "netns", ns)
            _run("ip", "link", "set", host_end, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.node_ip[n]}/24", "dev", ns_end)
            _run("ip", "-n", ns, "link", "set", ns_end, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        lines = ["127.0.0.1 localhost", f"{self.ctl_ip} {self.host}"]
        lines += [f"{self.node_ip[n]} {n}" for n in NODES]
        (self.dir / "hosts").write_text("\n".join(lines) + "\n")

    def _munge(self) -> None:
        mdir = self.dir / "munge"
        mdir.mkdir(mode=0o755)
        mdir.chmod(0o755)
        self.dir.chmod(0o755)
        key = mdir / "munge.key"
        if Path("/etc/munge/munge.key").exists():
            _run("install", "-m400", "/etc/munge/munge.key", str(key))
        else:
            _run("mungekey", "-c", "-k", str(key))
        self.munge_socket = mdir / "sock"
        _run(
            _bin("munged"),
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--log-file={mdir / 'munged.log'}",
            f"--pid-file={mdir / 'munged.pid'}",
            f"--seed-file={mdir / 'seed'}",
        )
        _wait_for(self.munge_socket.exists, 10, "the munge socket")

    def _slurm(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log"):
            (d / sub).mkdir()
        ctl_port, node_port = random.randint(20000, 29000), random.randint(30000, 39000)
        conf = f"""\
            ClusterName=spro
            SlurmctldHost={self.host}({self.ctl_ip})
            SlurmctldPort={ctl_port}
            SlurmdPort={node_port}
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket={self.munge_socket}
            SlurmUser=root
            SlurmdUser=root
            StateSaveLocation={d / "state"}
            SlurmdSpoolDir={d / "spool"}/%n
            SlurmctldPidFile={d / "slurmctld.pid"}
            SlurmdPidFile={d / "slurmd-%n.pid"}
            SlurmctldLogFile={d / "log" / "slurmctld.log"}
            SlurmdLogFile={d / "log" / "slurmd-%n.log"}
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            SchedulerType=sched/backfill
            SchedulerParameters=batch_sched_delay=0
            MailProg=/bin/true
            SlurmdParameters=config_overrides
            ReturnToService=2
            MinJobAge=600
            KillWait=30
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            GresTypes=gpu
            """
        conf = textwrap.dedent(conf)
        conf += "".join(
            f"NodeName={n} NodeAddr={self.node_ip[n]} CPUs={NODE_CPUS} RealMemory=4000 State=UNKNOWN\n" for n in NODES
        )
        conf += f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP\n"
        self.conf.write_text(conf)
        _run(_bin("slurmctld"), "-f", str(self.conf), env=self.env)
        for n in NODES:
            (d / "spool" / n).mkdir()
            inner = (
                f"hostname {n} && mount --bind {d / 'hosts'} /etc/hosts && exec {_bin('slurmd')} -f {self.conf} -N {n}"
            )
            _run(
                "nsenter",
                f"--net=/var/run/netns/{self.netns[n]}",
                "unshare",
                "--uts",
                "--mount",
                "bash",
                "-c",
                inner,
                env=self.env,
            )

        def all_idle() -> bool:
            out = _run("sinfo", "-h", "-N", "-o", "%N %t", check=False, env=self.env).stdout.split("\n")
            states = dict(line.split() for line in out if line.strip())
            return all(states.get(n) == "idle" for n in NODES)

        _wait_for(all_idle, 30, "both SLURM nodes to be idle")

    # -- use -----------------------------------------------------------------------------------------------
    def sbatch(self, workdir: Path, args: list[str], env: dict[str, str]) -> str:
        out = _run("sbatch", "--parsable", *args, env={**self.env, **env}, cwd=workdir).stdout
        return out.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        out = _run("scontrol", "show", "job", "-o", job_id, check=False, env=self.env).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait_job(self, job_id: str, timeout: float) -> dict[str, str]:
        def done():
            info = self.job_info(job_id)
            state = info.get("JobState", "")
            return info if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") else None

        return _wait_for(done, timeout, f"job {job_id} to finish", interval=0.5)

    def netns_pids(self, node: str) -> set[int]:
        out = _run("ip", "netns", "pids", self.netns[node], check=False).stdout.split()
        return {int(p) for p in out if _pid_alive(int(p))}

    def slurmd_pid(self, node: str) -> int:
        return int((self.dir / f"slurmd-{node}.pid").read_text().strip())

    # -- teardown (by PID file; only what this fixture created) ----------------------------------------------
    def stop(self) -> None:
        for n in NODES:
            pidfile = self.dir / f"slurmd-{n}.pid"
            if pidfile.exists():
                _kill_pid(int(pidfile.read_text().strip()))
        for pidfile in (self.dir / "slurmctld.pid", self.dir / "munge" / "munged.pid"):
            if pidfile.exists():
                _kill_pid(int(pidfile.read_text().strip()))
        for n in NODES:  # anything still inside our namespaces was started by our jobs
            for pid in self.netns_pids(n):
                _kill_pid(pid, timeout=5)
            _run("ip", "netns", "del", self.netns[n], check=False)
        for link in reversed(self._links):
            _run("ip", "link", "del", link, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster()
    try:
        cluster.start()
    except Exception as e:
        logs = "".join(
            f"\n--- {p}\n{p.read_text()[-2000:]}"
            for p in [*sorted(cluster.dir.glob("log/*.log")), cluster.dir / "munge" / "munged.log"]
            if p.exists()
        )
        cluster.stop()
        pytest.fail(f"could not bring up the local SLURM cluster: {e}{logs}")
    print(f"local SLURM cluster up in {cluster.bring_up_s:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()


def _job_env(cluster: SlurmCluster, **extra: str) -> dict[str, str]:
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SPRO_REPO": str(REPO),
        "SPRO_PYTHON": sys.executable,
        "SPRO_RAY_TEMP_DIR": str(cluster.dir / "r"),
        "SPRO_RAY_INCLUDE_DASHBOARD": "false",
        "SPRO_RAY_START_ARGS": "--object-store-memory=100000000",
        "SPRO_GPUS_PER_NODE": "0",
        "SPRO_SMOKE": "1",
        "SPRO_SKIP_CHECK": "1",
        "SPRO_RAY_WAIT_TIMEOUT": "120",
    }
    env.update(extra)
    return env


def _job_processes(job_id: str) -> list[str]:
    """Processes whose environment says they belong to SLURM job JOB_ID (Ray inherits it from `ray start`)."""
    needle = f"SLURM_JOB_ID={job_id}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not _pid_alive(int(proc.name)):
            continue
        try:
            if needle in (proc / "environ").read_bytes():
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:150].decode(errors="replace")
                found.append(f"{proc.name}: {cmdline}")
        except OSError:
            continue
    return found


def _assert_torn_down(cluster: SlurmCluster, job_id: str) -> None:
    def clean():
        if _job_processes(job_id):
            return False
        return all(cluster.netns_pids(n) <= {cluster.slurmd_pid(n)} for n in NODES)

    try:
        _wait_for(clean, 20, f"job {job_id}'s processes to exit", interval=0.5)
    except TimeoutError:
        pytest.fail(
            f"leftover processes of job {job_id}: {_job_processes(job_id)}; "
            f"in the node namespaces: {[cluster.netns_pids(n) for n in NODES]}"
        )


def _start(cluster: SlurmCluster, tmp_path: Path, env: dict[str, str], *script_args: str, cpus: int = 2) -> str:
    """sbatch the script on both nodes, --cpus-per-task=CPUS; returns the job id."""
    args = ["--nodes=2", "--gpus-per-node=0", f"--cpus-per-task={cpus}", "--job-name=spro-test"]
    args += [f"--output={tmp_path}/job-%j.out", str(SBATCH_SCRIPT), *script_args]
    return cluster.sbatch(tmp_path, args, env)


def _finish(cluster: SlurmCluster, tmp_path: Path, job_id: str, t0: float, timeout: float) -> tuple[dict, str, float]:
    info = cluster.wait_job(job_id, timeout=timeout)
    elapsed = time.monotonic() - t0
    out_file = tmp_path / f"job-{job_id}.out"
    output = out_file.read_text() if out_file.exists() else "(no job output)"
    print(f"job {job_id}: {info.get('JobState')} {info.get('ExitCode')} in {elapsed:.1f}s\n{output}")
    return info, output, elapsed


def _submit(
    cluster: SlurmCluster, tmp_path: Path, env: dict[str, str], *script_args: str, cpus: int = 2, timeout: float = 240
) -> tuple[str, dict, str, float]:
    t0 = time.monotonic()
    job_id = _start(cluster, tmp_path, env, *script_args, cpus=cpus)
    return (job_id, *_finish(cluster, tmp_path, job_id, t0, timeout))


def test_smoke_job_brings_up_ray_on_both_nodes_and_tears_down(slurm_cluster, tmp_path):
    job_id, info, output, _ = _submit(
        slurm_cluster, tmp_path, _job_env(slurm_cluster), "trainer.total_epochs=3", "algorithm.spro.beta=0.1"
    )

    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", output
    assert f"SPRO-SLURM job {job_id} finished: exit status 0" in output
    # Both nodes joined one Ray cluster, each a distinct host.
    assert "Ray cluster ready: 2 node(s) ['n1', 'n2'], 0 GPU(s)" in output
    for n in NODES:
        assert f"SMOKE node={n} hostname={n} ip={slurm_cluster.node_ip[n]}" in output, output
    assert "estimator[spro]=registered" in output
    assert "MISSING" not in output
    assert "SMOKE OK: 2 node(s)" in output
    # The user's overrides pass through; trainer.nnodes / n_gpus_per_node come from SLURM.
    assert "trainer.total_epochs=3 algorithm.spro.beta=0.1 trainer.nnodes=2 trainer.n_gpus_per_node=0" in output
    # Per-node logs: the head ran on n1, the worker step on n2.
    logs = tmp_path / "logs" / f"slurm-{job_id}"
    assert "Ray runtime started" in (logs / "ray-head-n1.log").read_text()
    assert "Ray runtime started" in (logs / "ray-worker-n2.log").read_text()
    assert "Ray stopped on n2" in output and "Ray stopped on n1 (head)" in output
    _assert_torn_down(slurm_cluster, job_id)


def test_worker_that_never_joins_fails_within_the_bounded_wait(slurm_cluster, tmp_path):
    env = _job_env(slurm_cluster, SPRO_TEST_NO_RAY_ON="n2", SPRO_RAY_WAIT_TIMEOUT="15")
    job_id, info, output, elapsed = _submit(slurm_cluster, tmp_path, env)

    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", output
    assert "Ray cluster incomplete after 15s" in output
    assert "missing node(s): n2" in output
    assert "the Ray cluster did not assemble" in output
    assert "SMOKE" not in output.replace("SPRO_SMOKE", "")
    assert f"SPRO-SLURM job {job_id} finished: exit status 1" in output
    assert elapsed < 15 + 60, f"the job took {elapsed:.0f}s: the wait is not bounded"
    _assert_torn_down(slurm_cluster, job_id)


def test_failed_preflight_stops_the_job_before_ray_starts(slurm_cluster, tmp_path):
    env = _job_env(slurm_cluster, SPRO_SKIP_CHECK="0", SPRO_CHECK_CMD="false")
    job_id, info, output, _ = _submit(slurm_cluster, tmp_path, env, "spro_fsdp2_7b", "trainer.total_epochs=1")

    assert info["JobState"] == "FAILED", output
    assert "preflight check failed for config 'spro_fsdp2_7b'" in output
    assert "starting Ray head" not in output
    assert not (tmp_path / "logs" / f"slurm-{job_id}" / "ray-head-n1.log").exists()
    _assert_torn_down(slurm_cluster, job_id)


def test_scancel_tears_the_cluster_down(slurm_cluster, tmp_path):
    env = _job_env(slurm_cluster, SPRO_TEST_NO_RAY_ON="n2", SPRO_RAY_WAIT_TIMEOUT="200")
    job_id = _start(slurm_cluster, tmp_path, env)
    out_file = tmp_path / f"job-{job_id}.out"
    _wait_for(
        lambda: out_file.exists() and "waiting up to 200s" in out_file.read_text(), 60, "the job to start waiting"
    )
    _run("scancel", job_id, env=slurm_cluster.env)
    info = slurm_cluster.wait_job(job_id, timeout=60)
    output = out_file.read_text()
    print(output)
    assert info["JobState"] == "CANCELLED", output
    assert "teardown (exit status 143, at most 25s)" in output  # KillWait 30 s minus 5
    assert "Ray stopped on n1 (head)" in output
    _assert_torn_down(slurm_cluster, job_id)


def test_time_limit_warning_signal_stops_ray_cleanly(slurm_cluster, tmp_path):
    """`#SBATCH --signal=B:USR1@300` near the time limit: SIGUSR1 to the batch shell stops the job and Ray."""
    env = _job_env(slurm_cluster, SPRO_TEST_NO_RAY_ON="n2", SPRO_RAY_WAIT_TIMEOUT="200")
    t0 = time.monotonic()
    job_id = _start(slurm_cluster, tmp_path, env)
    out_file = tmp_path / f"job-{job_id}.out"
    _wait_for(
        lambda: out_file.exists() and "waiting up to 200s" in out_file.read_text(), 60, "the job to start waiting"
    )
    _run("scancel", "--batch", "--signal=USR1", job_id, env=slurm_cluster.env)  # what SLURM sends at limit-300s
    info, output, elapsed = _finish(slurm_cluster, tmp_path, job_id, t0, timeout=60)
    assert info["JobState"] == "FAILED", output
    assert "SIGUSR1: the time limit is near; stopping the run and Ray" in output
    assert "teardown (exit status 138, at most 25s)" in output
    assert "Ray stopped on n1 (head)" in output and "Ray stopped on n2" in output
    assert f"SPRO-SLURM job {job_id} finished: exit status 138" in output
    assert elapsed < 120, f"{elapsed:.0f}s"
    _assert_torn_down(slurm_cluster, job_id)


def test_container_image_wraps_every_step(slurm_cluster, tmp_path):
    """SPRO_CONTAINER_IMAGE=*.sif runs every step through `apptainer exec` (a stand-in that logs and runs the command:
    there is no Apptainer here)."""
    bindir, calls = tmp_path / "bin", tmp_path / "apptainer-calls.log"
    bindir.mkdir()
    fake = bindir / "apptainer"
    fake.write_text(
        "#!/bin/bash\n"
        f'echo "$(hostname) $*" >> {calls}\n'
        '[[ "$1" == exec ]] && shift\n'
        'while [[ "$1" == --* ]]; do [[ "$1" == --bind ]] && shift; shift; done\n'
        'shift\nexec "$@"\n'  # the image
    )
    fake.chmod(0o755)
    image = tmp_path / "verl-spro.sif"
    image.write_text("not an image")
    env = _job_env(slurm_cluster, SPRO_CONTAINER_IMAGE=str(image))
    env["PATH"] = f"{bindir}:{env['PATH']}"
    job_id, info, output, _ = _submit(slurm_cluster, tmp_path, env)
    assert info["JobState"] == "COMPLETED", output
    assert f"container {image}" in output and "SMOKE OK: 2 node(s)" in output
    lines = calls.read_text().splitlines()
    prefix = f"exec --bind {REPO},{tmp_path} {image} "
    assert any(line.startswith(f"n1 {prefix}ray start --head") for line in lines), lines
    assert any(line.startswith(f"n2 {prefix}env -u SPRO_RAY_NODE_IP SPRO_NODE_NAME=n2") for line in lines), lines
    assert any(line.startswith(f"n1 {prefix}{sys.executable} {REPO}/scripts/ray_tools.py wait") for line in lines)
    assert any(line.startswith(f"n1 {prefix}{sys.executable} {REPO}/scripts/ray_tools.py smoke") for line in lines)
    assert "--nv" not in calls.read_text()  # no GPUs on these nodes
    _assert_torn_down(slurm_cluster, job_id)


# --- real training across both nodes (CPU backend) ---------------------------------------------------------------
TRAIN_CPUS = NODE_CPUS


def _training_env(cluster: SlurmCluster, metrics: Path) -> dict[str, str]:
    from verl_spro.hydra_compose import VERL_CONFIG_MODULE

    verl_config_dir = Path(__import__(VERL_CONFIG_MODULE, fromlist=["_"]).__file__).parent
    env = _job_env(
        cluster,
        SPRO_SMOKE="0",
        SPRO_CPU_BACKEND="1",
        SPRO_CONFIG_DIR=str(verl_config_dir),
        SPRO_CONFIG_NAME="ppo_trainer",
        VERL_FILE_LOGGER_PATH=str(metrics),
        SPRO_RAY_START_ARGS="--object-store-memory=200000000",
    )
    del env["SPRO_GPUS_PER_NODE"]  # the CPU backend's default: one logical GPU per node
    return env


def _steps(metrics: Path) -> dict[int, dict]:
    if not metrics.exists():
        return {}
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {r["step"]: r["data"] for r in records}


def _checkpoint_digest(step_dir: Path) -> dict[str, str]:
    return {
        str(f.relative_to(step_dir)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(step_dir.rglob("*"))
        if f.is_file()
    }


def _assert_trained_on_both_nodes(cluster: SlurmCluster, output: str) -> None:
    assert "Ray cluster ready: 2 node(s) ['n1', 'n2'], 2 GPU(s)" in output, output
    for n in NODES:  # the per-node check of verl_spro.main_ppo, in a Ray worker on each node
        assert f"verl-spro: Ray node {n} ({cluster.node_ip[n]}): verl 0.9.1, verl-spro from " in output, output
    # Ray prefixes the output of an actor on another node than the driver (n1) with its IP: verl's FSDP workers
    # (WorkerDict, one per logical GPU: world size 2) ran on n2 too.
    assert re.search(rf"\(WorkerDict pid=\d+, ip={re.escape(cluster.node_ip['n2'])}\)", output), output


@pytest.mark.slow
def test_two_node_training_checkpoint_resume_and_scancel(slurm_cluster, tmp_path):
    """verl's main_ppo with adv_estimator=spro over both SLURM nodes: 2 steps and a checkpoint, a resumed job, then
    a job cancelled mid-step that leaves nothing behind and the checkpoint intact."""
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"

    # 1. two steps, FSDP actor over 2 ranks (one logical GPU on each node, gloo over TCP between them).
    metrics = tmp_path / "metrics-1.jsonl"
    env = _training_env(slurm_cluster, metrics)
    job_id, info, output, elapsed = _submit(
        slurm_cluster, tmp_path, env, *two_rank_overrides(out, steps=2, resume=False), cpus=TRAIN_CPUS, timeout=420
    )
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", output
    assert "trainer.nnodes=2 trainer.n_gpus_per_node=1" in output
    _assert_trained_on_both_nodes(slurm_cluster, output)
    steps = _steps(metrics)
    assert sorted(steps) == [1, 2], output
    for data in steps.values():
        assert {"spro/msa_abs_mean", "spro/outcome_abs_mean", "spro/beta"} <= set(data)
    assert steps[1]["spro/msa_abs_mean"] == 0.0  # policy == reference at step 1, by construction
    assert steps[2]["spro/msa_abs_mean"] > 0
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    actor = checkpoints / "global_step_2" / "actor"
    assert {p.name for p in actor.glob("model_world_size_2_rank_*.pt")} == {
        "model_world_size_2_rank_0.pt",
        "model_world_size_2_rank_1.pt",
    }, sorted(p.name for p in actor.iterdir())
    _assert_torn_down(slurm_cluster, job_id)
    print(f"two-node training job: {elapsed:.0f}s")

    # 2. resumed from global_step_2: step 3 only, then its checkpoint.
    metrics = tmp_path / "metrics-2.jsonl"
    env = _training_env(slurm_cluster, metrics)
    job_id, info, output, elapsed = _submit(
        slurm_cluster, tmp_path, env, *two_rank_overrides(out, steps=3, resume=True), cpus=TRAIN_CPUS, timeout=420
    )
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", output
    assert sorted(_steps(metrics)) == [3], output
    assert _steps(metrics)[3]["spro/msa_abs_mean"] > 0
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    _assert_torn_down(slurm_cluster, job_id)
    print(f"resumed job: {elapsed:.0f}s")

    # 3. resumed again (to step 6, no checkpoint before the end) and cancelled with scancel in the middle of step 5.
    before = _checkpoint_digest(checkpoints / "global_step_3")
    metrics = tmp_path / "metrics-3.jsonl"
    env = _training_env(slurm_cluster, metrics)
    t0 = time.monotonic()
    job_id = _start(slurm_cluster, tmp_path, env, *two_rank_overrides(out, steps=6, resume=True), cpus=TRAIN_CPUS)
    _wait_for(lambda: 4 in _steps(metrics), 420, "step 4 of the third job", interval=0.5)
    _run("scancel", job_id, env=slurm_cluster.env)
    info, output, elapsed = _finish(slurm_cluster, tmp_path, job_id, t0, timeout=90)
    assert info["JobState"] == "CANCELLED", output
    assert "teardown (exit status 143, at most 25s)" in output
    assert f"SPRO-SLURM job {job_id} finished: exit status 143" in output
    assert 6 not in _steps(metrics)
    _assert_torn_down(slurm_cluster, job_id)
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    assert sorted(p.name for p in checkpoints.glob("global_step_*")) == ["global_step_2", "global_step_3"]
    assert _checkpoint_digest(checkpoints / "global_step_3") == before
    print(f"cancelled job: {elapsed:.0f}s")
