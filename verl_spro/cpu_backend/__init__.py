"""A CPU backend for verl 0.9.1, so that the real ``python -m verl.trainer.main_ppo`` runs on a laptop.

Importing this package installs it in the importing process; it is never imported by merely installing verl-spro
(the ``verl.plugins`` entry point installs the SPRO estimator only). Enable it for a run, in the driver and in
every Ray worker, with::

    VERL_USE_EXTERNAL_MODULES=verl_spro.cpu_backend python -m verl.trainer.main_ppo \\
        actor_rollout_ref.rollout.name=hf_cpu ...

(``verl-spro smoke`` does it, with the rest of the settings a CPU run needs). What it installs, each through the
extension point verl offers for it:

* the ``cpu`` platform (:class:`~verl_spro.cpu_backend.platform.PlatformCPU`): registered with
  ``PlatformRegistry`` and made current with ``set_platform`` (verl would otherwise fall back to ``nvidia``);
* the ``hf_cpu`` rollout (:mod:`verl_spro.cpu_backend.rollout`): ``RolloutReplicaRegistry.register`` for the server
  side and an entry in ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` for the in-worker adapter;
* verl's FSDP engines registered for device ``cpu`` too (``EngineRegistry.register``);
* two fixes on the route: the process group is plain ``gloo`` (verl builds ``"cpu:gloo,<device>:<backend>"``, which
  is ``"cpu:gloo,cpu:gloo"`` here), and FSDP2's CPU offload policy does not pin memory (pinning needs an
  accelerator; verl always offloads the reference model with ``pin_memory=True``).
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any

from verl_spro.import_hooks import when_imported

ROLLOUT_NAME = "hf_cpu"
ROLLOUT_ADAPTER = "verl_spro.cpu_backend.rollout.CpuServerAdapter"
_PATCHED = "__verl_spro_cpu_backend__"
OFFLOAD_LOG_LINE = "FSDP2 CPU offload policy without pinned memory"

logger = logging.getLogger(__name__)

__all__ = ["ROLLOUT_ADAPTER", "ROLLOUT_NAME", "install"]


def _gloo_process_group(init: Any) -> Any:
    """Wrap verl's ``initialize_global_process_group_ray`` so that its default backend is plain ``gloo``."""
    if getattr(init, _PATCHED, False):
        return init

    @functools.wraps(init)
    def wrapper(timeout_second: Any = None, backend: str | None = None) -> Any:
        return init(timeout_second=timeout_second, backend=backend or "gloo")

    setattr(wrapper, _PATCHED, True)
    return wrapper


def _patch_process_group(module: ModuleType) -> None:
    # verl.workers.engine_workers and verl.checkpoint_engine.base import the function by name.
    module.initialize_global_process_group_ray = _gloo_process_group(module.initialize_global_process_group_ray)


def _patch_fsdp_engine(module: ModuleType) -> None:
    from verl.workers.engine.base import EngineRegistry

    for model_type, engine in (
        ("language_model", module.FSDPEngineWithLMHead),
        ("value_model", module.FSDPEngineWithValueHead),
    ):
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device="cpu")(engine)

    policy = module.CPUOffloadPolicy
    if policy is not None and not getattr(policy, _PATCHED, False):

        class UnpinnedCPUOffloadPolicy(policy):  # type: ignore[misc, valid-type]
            """FSDP2's CPU offload without pinned memory (pinning needs an accelerator)."""

            def __init__(self, pin_memory: bool = False) -> None:
                super().__init__(pin_memory=False)
                # verl offloads only forward-only engines (the reference model) by default: this line in a run's log
                # says a reference model was built.
                logger.warning("%s: %s", __name__, OFFLOAD_LOG_LINE)

        setattr(UnpinnedCPUOffloadPolicy, _PATCHED, True)
        module.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def _register_replica(module: ModuleType) -> None:
    def load() -> type:
        from verl_spro.cpu_backend.rollout import CpuRolloutReplica

        return CpuRolloutReplica

    module.RolloutReplicaRegistry.register(ROLLOUT_NAME, load)


def _register_adapter(module: ModuleType) -> None:
    # Private name: verl 0.9.1 offers no public way to add an in-worker rollout class (get_rollout_class reads this).
    module._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ROLLOUT_ADAPTER


def _install_platform() -> None:
    from verl.plugin.platform import PlatformRegistry, set_platform

    from verl_spro.cpu_backend.platform import PLATFORM_NAME, PlatformCPU

    PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
    set_platform(PlatformCPU())


_installed = False


def install() -> None:
    """Make the CPU the current verl platform and register the ``hf_cpu`` rollout and the CPU FSDP engine (once)."""
    global _installed
    if _installed:
        return
    _installed = True
    _install_platform()
    for module_name, hook in (
        ("verl.utils.distributed", _patch_process_group),
        ("verl.workers.engine_workers", _patch_process_group),
        ("verl.checkpoint_engine.base", _patch_process_group),
        ("verl.workers.engine.fsdp.transformer_impl", _patch_fsdp_engine),
        ("verl.workers.rollout.replica", _register_replica),
        ("verl.workers.rollout.base", _register_adapter),
    ):
        when_imported(module_name, hook, on_error=_report_failure)


def _report_failure(failure: Any) -> None:
    # The import goes on without the patch (import_hooks is fail-soft); a CPU run then fails later, so say why here.
    logger.error("%s: a patch of verl failed, the CPU route will not work: %s", __name__, failure)


install()
