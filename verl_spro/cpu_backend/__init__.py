"""A CPU backend for verl 0.9.1, so that the real ``python -m verl.trainer.main_ppo`` runs on a laptop.

Importing this package changes nothing by itself (its constants, e.g. :data:`ROLLOUT_NAME`, are importable anywhere);
it is never imported by merely installing verl-spro (the ``verl.plugins`` entry point installs the SPRO estimator
only). It installs itself on import only where it is enabled, i.e. named in ``VERL_USE_EXTERNAL_MODULES``, which
verl imports in the driver and in every Ray worker; enable it for a run with::

    VERL_USE_EXTERNAL_MODULES=verl_spro.cpu_backend python -m verl.trainer.main_ppo \\
        actor_rollout_ref.rollout.name=hf_cpu ...

(``verl-spro smoke`` does it, with the rest of the settings a CPU run needs), or call :func:`install` in a process.
What it installs, each through the extension point verl offers for it:

* the ``cpu`` platform (:class:`~verl_spro.cpu_backend.platform.PlatformCPU`): registered with
  ``PlatformRegistry`` and made current with ``set_platform`` (verl would otherwise fall back to ``nvidia``);
* the ``hf_cpu`` rollout (:mod:`verl_spro.cpu_backend.rollout`): ``RolloutReplicaRegistry.register`` for the server
  side and an entry in ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` for the in-worker adapter;
* verl's FSDP engines registered for device ``cpu`` too (``EngineRegistry.register``);
* two fixes on the route: the process group is plain ``gloo`` (verl builds ``"cpu:gloo,<device>:<backend>"``, which
  is ``"cpu:gloo,cpu:gloo"`` here), and FSDP2's CPU offload policy does not pin memory (pinning needs an
  accelerator; verl always offloads the reference model with ``pin_memory=True``).

Like the SPRO hooks, every patch first checks the verl version (``verl>=0.9.1,<0.10``) and its target (present,
callable, with the parameters it wraps); a check that fails leaves that part of verl untouched and logs one line
naming the target and why, and the CPU run then fails at that point instead of misbehaving.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

from verl_spro.import_hooks import HookFailure, when_imported
from verl_spro.vllm_plugin import cpu_backend_in_effect

ROLLOUT_NAME = "hf_cpu"
ROLLOUT_ADAPTER = "verl_spro.cpu_backend.rollout.CpuServerAdapter"
_PATCHED = "__verl_spro_cpu_backend__"
OFFLOAD_LOG_LINE = "FSDP2 CPU offload policy without pinned memory"

logger = logging.getLogger(__name__)

__all__ = ["ROLLOUT_ADAPTER", "ROLLOUT_NAME", "install", "installed"]


def _checked(hook: Any) -> Any:
    """``hook`` run only on a supported verl; a missing or changed target raises ``HookTargetError`` (one line)."""

    @functools.wraps(hook)
    def guarded(module: ModuleType) -> None:
        # Imported when the hook runs: the backend's constants stay importable without torch and verl.
        from verl_spro.verl_hooks import supported_verl_only

        supported_verl_only(hook)(module)

    return guarded


def _gloo_process_group(init: Any) -> Any:
    """Wrap verl's ``initialize_global_process_group_ray`` so that its default backend is plain ``gloo``."""
    if getattr(init, _PATCHED, False):
        return init

    @functools.wraps(init)
    def wrapper(timeout_second: Any = None, backend: str | None = None) -> Any:
        return init(timeout_second=timeout_second, backend=backend or "gloo")

    setattr(wrapper, _PATCHED, True)
    return wrapper


@_checked
def _patch_process_group(module: ModuleType) -> None:
    from verl_spro.verl_hooks import check_target

    # verl.workers.engine_workers and verl.checkpoint_engine.base import the function by name.
    name = "initialize_global_process_group_ray"
    init = check_target(module, name, f"{module.__name__}.{name}", ("timeout_second", "backend"))
    module.initialize_global_process_group_ray = _gloo_process_group(init)


@_checked
def _patch_fsdp_engine(module: ModuleType) -> None:
    from verl.workers.engine.base import EngineRegistry

    from verl_spro.verl_hooks import HookTargetError, check_target

    check_target(EngineRegistry, "register", "verl.workers.engine.base.EngineRegistry.register", ("device",))
    engines = {}
    for name in ("FSDPEngineWithLMHead", "FSDPEngineWithValueHead", "CPUOffloadPolicy"):
        if not hasattr(module, name):
            raise HookTargetError(f"{module.__name__}.{name}", "missing")
        engines[name] = getattr(module, name)
    for model_type, engine in (
        ("language_model", engines["FSDPEngineWithLMHead"]),
        ("value_model", engines["FSDPEngineWithValueHead"]),
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


@_checked
def _register_replica(module: ModuleType) -> None:
    from verl_spro.verl_hooks import HookTargetError, check_target

    registry = getattr(module, "RolloutReplicaRegistry", None)
    if registry is None:
        raise HookTargetError(f"{module.__name__}.RolloutReplicaRegistry", "missing")
    check_target(registry, "register", f"{module.__name__}.RolloutReplicaRegistry.register")

    def load() -> type:
        from verl_spro.cpu_backend.rollout import CpuRolloutReplica

        return CpuRolloutReplica

    module.RolloutReplicaRegistry.register(ROLLOUT_NAME, load)


@_checked
def _register_adapter(module: ModuleType) -> None:
    from verl_spro.verl_hooks import HookTargetError

    if not isinstance(getattr(module, "_ROLLOUT_REGISTRY", None), dict):
        raise HookTargetError(f"{module.__name__}._ROLLOUT_REGISTRY", "missing or not a dict")
    # Private name: verl 0.9.1 offers no public way to add an in-worker rollout class (get_rollout_class reads this).
    module._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ROLLOUT_ADAPTER


@_checked
def _install_platform(module: ModuleType) -> None:
    from verl_spro.cpu_backend.platform import PLATFORM_NAME, PlatformCPU
    from verl_spro.verl_hooks import check_target

    register = check_target(module.PlatformRegistry, "register", "verl.plugin.platform.PlatformRegistry.register")
    set_platform = check_target(module, "set_platform", "verl.plugin.platform.set_platform")
    register(platform=PLATFORM_NAME)(PlatformCPU)
    set_platform(PlatformCPU())


_installed = False


def install() -> None:
    """Make the CPU the current verl platform and register the ``hf_cpu`` rollout and the CPU FSDP engine (once).

    The explicit enable step (importing the package does it where ``VERL_USE_EXTERNAL_MODULES`` names it)."""
    global _installed
    if _installed:
        return
    _installed = True
    for module_name, hook in (
        ("verl.plugin.platform", _install_platform),
        ("verl.utils.distributed", _patch_process_group),
        ("verl.workers.engine_workers", _patch_process_group),
        ("verl.checkpoint_engine.base", _patch_process_group),
        ("verl.workers.engine.fsdp.transformer_impl", _patch_fsdp_engine),
        ("verl.workers.rollout.replica", _register_replica),
        ("verl.workers.rollout.base", _register_adapter),
    ):
        when_imported(module_name, hook, on_error=_report_failure)
    importlib.import_module("verl.plugin.platform")  # the platform switches now, not at verl's next import of it


def installed() -> bool:
    """Whether :func:`install` ran in this process."""
    return _installed


def _report_failure(failure: HookFailure) -> None:
    # The import goes on without the patch (import_hooks is fail-soft); a CPU run then fails later, so say why here.
    error = failure.error
    why = str(error) if type(error).__name__ == "HookTargetError" else f"{type(error).__name__}: {error}"
    logger.error("%s: not installed on %s, the CPU route will not work: %s", __name__, failure.module, why)


if cpu_backend_in_effect():
    install()
