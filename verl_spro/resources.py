"""What a ``main_ppo`` config asks of the Ray cluster, against what the cluster has: refuse instead of hanging.

verl 0.9.1 hangs, silently and forever, when Ray cannot place what it asks for: the V1 trainer's TransferQueue
placement (one CPU for its controller and one per storage unit) and the workers' placement groups (one bundle per
GPU of ``trainer.nnodes x trainer.n_gpus_per_node``, each bundle with ``ResourcePoolManager.max_colocate_count``
CPUs, all of a node's bundles on one node). verl's own check (``ResourcePoolManager._check_resource_available``)
compares total GPUs only, and only after the TransferQueue has been placed, which is where a small machine hangs.

:func:`check_cluster` runs in the driver once Ray is up and before verl's task runner is scheduled (wired in by
:mod:`verl_spro.main_ppo`): it computes the lower bound below and compares it with the alive nodes' totals. A
cluster that this process started (``ray.init`` without an address) will not grow, so a shortage stops the run at
once; a cluster it connected to may still be assembling (nodes of a SLURM job joining), so it waits, up to
``VERL_SPRO_RESOURCE_WAIT_S`` seconds (default :data:`DEFAULT_WAIT_S`), with a line every
:data:`REPORT_EVERY_S` seconds. The bound counts only what every stock trainer places, so a run this refuses could
never have started; anything the check cannot read (an unknown config layout) lets the run go on unchecked.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from verl_spro.config import config_get as _get

__all__ = [
    "DEFAULT_WAIT_S",
    "WAIT_ENV",
    "ClusterCapacity",
    "ResourceDemand",
    "check_cluster",
    "cluster_capacity",
    "cluster_problem",
    "resource_demand",
    "shortage",
]

logger = logging.getLogger(__name__)

WAIT_ENV = "VERL_SPRO_RESOURCE_WAIT_S"
#: Seconds to wait for a cluster this process connected to (not started) to gather what the config asks for.
DEFAULT_WAIT_S = 300.0
REPORT_EVERY_S = 30.0
POLL_EVERY_S = 5.0


@dataclasses.dataclass(frozen=True)
class ResourceDemand:
    """The least a config needs from Ray: GPUs of each resource pool per node, and CPUs in all."""

    pools: dict[str, list[int]]  # pool -> accelerators wanted on each of its nodes
    cpus_per_gpu: int  # CPUs in each worker bundle (verl's ResourcePoolManager.max_colocate_count)
    other_cpus: int  # CPUs held by the V1 trainer's TransferQueue actors
    where: dict[str, str]  # pool -> the config keys it comes from, for messages

    @property
    def gpus(self) -> int:
        return sum(sum(nodes) for nodes in self.pools.values())

    @property
    def largest_node(self) -> int:
        return max((n for nodes in self.pools.values() for n in nodes), default=0)

    @property
    def cpus(self) -> int:
        return self.gpus * self.cpus_per_gpu + self.other_cpus


@dataclasses.dataclass(frozen=True)
class ClusterCapacity:
    """What the alive nodes of a Ray cluster have in all (not what is free right now)."""

    gpus_per_node: list[float]
    cpus: float
    resource: str  # Ray's name for the accelerator ("GPU", "NPU", ...)


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == value else None


def _pool(config: Any) -> list[int] | None:
    nnodes = _positive_int(_get(config, "nnodes"))
    per_node = _positive_int(_get(config, "n_gpus_per_node"))
    if nnodes is None or per_node is None:
        return None
    return [per_node] * nnodes


def _max_colocate_count() -> int:
    from verl.single_controller.ray.base import ResourcePoolManager

    field = {f.name: f for f in dataclasses.fields(ResourcePoolManager)}["max_colocate_count"]
    return int(field.default)


def _transfer_queue_cpus(config: Any) -> int:
    """CPUs the V1 trainer's TransferQueue holds: its controller, and one per SimpleStorage unit."""
    if not _get(_get(config, "trainer"), "use_v1", False):
        return 0
    from transfer_queue.controller import TransferQueueController
    from transfer_queue.storage.simple_storage import SimpleStorageUnit

    def actor_cpus(actor_class: Any) -> int:
        return int(getattr(actor_class, "_default_options", {}).get("num_cpus", 1) or 0)

    backend = _get(_get(config, "transfer_queue"), "backend")
    units = 0
    if _get(backend, "storage_backend") == "SimpleStorage":
        units = _positive_int(_get(_get(backend, "SimpleStorage"), "num_data_storage_units")) or 0
    return actor_cpus(TransferQueueController) + units * actor_cpus(SimpleStorageUnit)


def resource_demand(config: Any) -> ResourceDemand | None:
    """The resource pools the stock trainers build from ``config`` (verl 0.9.1: ``trainer_base.init_resource_pool_mgr``
    and ``main_ppo_v0``), with their CPUs; None when the config does not say (then nothing is checked)."""
    trainer = _get(config, "trainer")
    pools: dict[str, list[int]] = {}
    where: dict[str, str] = {}
    global_pool = _pool(trainer)
    if global_pool is None:
        return None
    pools["global_pool"] = global_pool
    where["global_pool"] = f"trainer.nnodes={len(global_pool)} x trainer.n_gpus_per_node={global_pool[0]}"
    reward_model = _get(_get(config, "reward"), "reward_model")
    if _get(reward_model, "enable_resource_pool", False):
        reward_pool = _pool(reward_model)
        if reward_pool is None:
            return None  # verl refuses this itself, with its own message
        pools["reward_pool"] = reward_pool
        where["reward_pool"] = (
            f"reward.reward_model.nnodes={len(reward_pool)} x reward.reward_model.n_gpus_per_node={reward_pool[0]}"
        )
    distillation = _get(config, "distillation")
    if distillation is not None and _get(distillation, "enabled", False):
        teacher_pool = _pool(distillation)
        if teacher_pool is None:
            return None
        pools["teacher_pool"] = teacher_pool
        where["teacher_pool"] = (
            f"distillation.nnodes={len(teacher_pool)} x distillation.n_gpus_per_node={teacher_pool[0]}"
        )
    return ResourceDemand(pools, _max_colocate_count(), _transfer_queue_cpus(config), where)


def cluster_capacity(nodes: list[Mapping[str, Any]], resource: str) -> ClusterCapacity:
    """Totals of the alive nodes in ``ray.nodes()``'s format."""
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive")]
    return ClusterCapacity(
        gpus_per_node=[float(r.get(resource, 0)) for r in alive],
        cpus=float(sum(r.get("CPU", 0) for r in alive)),
        resource=resource,
    )


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def describe(capacity: ClusterCapacity) -> str:
    nodes = len(capacity.gpus_per_node)
    per_node = "/".join(_count(g) for g in capacity.gpus_per_node) or "0"
    return (
        f"{_count(sum(capacity.gpus_per_node))} {capacity.resource}s ({per_node} per node) and "
        f"{_count(capacity.cpus)} CPUs on {nodes} node{'s' if nodes != 1 else ''}"
    )


def shortage(demand: ResourceDemand, capacity: ClusterCapacity) -> str | None:
    """What of ``demand`` the cluster cannot place however long it waits, in words; None when it can."""
    resource = capacity.resource
    asks = "; ".join(f"{pool}: {how}" for pool, how in demand.where.items())
    if sum(capacity.gpus_per_node) < demand.gpus:
        return f"the config asks for {demand.gpus} {resource}s ({asks})"
    largest = max(capacity.gpus_per_node, default=0.0)
    if largest < demand.largest_node:
        return (
            f"the config asks for {demand.largest_node} {resource}s on one node ({asks}), "
            f"the largest node has {_count(largest)}"
        )
    if capacity.cpus < demand.cpus:
        return (
            f"the config asks for at least {demand.cpus} CPUs ({demand.cpus_per_gpu} per {resource} for "
            f"{demand.gpus} {resource}s, {demand.other_cpus} for the V1 trainer's TransferQueue)"
        )
    return None


def _wait_limit(started_here: bool, environ: Mapping[str, str]) -> float:
    if started_here:
        return 0.0
    raw = environ.get(WAIT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{WAIT_ENV}={raw!r}: give the seconds to wait for the Ray cluster, a number >= 0")
    return value


def check_cluster(
    demand: ResourceDemand,
    read_capacity: Callable[[], ClusterCapacity],
    started_here: bool,
    address: str,
    environ: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """None once the cluster can hold ``demand``; else the one-line reason to stop, after the bounded wait."""
    limit = _wait_limit(started_here, os.environ if environ is None else environ)
    start = clock()
    next_report = start
    while True:
        capacity = read_capacity()
        missing = shortage(demand, capacity)
        if missing is None:
            return None
        waited = clock() - start
        if waited >= limit:
            break
        if clock() >= next_report:
            say(
                f"verl-spro: waiting for the Ray cluster at {address} to gather what the config asks for: "
                f"{missing}, it has {describe(capacity)} ({waited:.0f} s of {limit:.0f} s, {WAIT_ENV} sets it)"
            )
            next_report = clock() + REPORT_EVERY_S
        sleep(min(POLL_EVERY_S, max(limit - waited, 0.0)))
    if started_here:
        how = (
            "this machine's Ray cluster, started by this run, will not grow: lower those numbers, or start a "
            "cluster that has them (scripts/ray_cluster.sh, ray start) and point RAY_ADDRESS at it"
        )
    else:
        how = f"gave up after {limit:.0f} s ({WAIT_ENV} sets the wait): start the missing nodes or lower those numbers"
    return f"verl-spro: {missing}, the Ray cluster at {address} has {describe(capacity)}; {how}"


def check_running_cluster(config: Any) -> str | None:
    """:func:`check_cluster` against the Ray cluster this process is connected to (``ray.init`` done)."""
    import ray

    demand = resource_demand(config)
    if demand is None:
        return None
    from verl.utils.device import get_resource_name

    resource = get_resource_name()
    try:
        started_here = bool(ray._private.worker._global_node.is_head())
    except Exception:  # a Ray without this private attribute: treat the cluster as one that may still grow
        started_here = False
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:
        address = "?"
    return check_cluster(demand, lambda: cluster_capacity(ray.nodes(), resource), started_here, address)


def cluster_problem(config: Any) -> str | None:
    """:func:`check_running_cluster`, fail-soft: a check that cannot read the config or the cluster lets the run go on
    (with a warning); only a real shortage, or a bad ``VERL_SPRO_RESOURCE_WAIT_S``, is a reason to stop."""
    try:
        return check_running_cluster(config)
    except ValueError as err:
        if WAIT_ENV in str(err):
            return f"verl-spro: {err}"
        problem: Exception = err
    except Exception as err:
        problem = err
    logger.warning(
        "verl-spro: resource check skipped (%s: %s); the run goes on unchecked", type(problem).__name__, problem
    )
    return None
