"""SPRO inside verl 0.9: each hook is named after the verl function it serves, and none can break verl.

verl's custom-estimator signature hands an estimator ``token_level_rewards``, ``response_mask``, ``index`` and
``config``, not the log-probs SPRO's process reward is made of (verl 0.9.1 passes the batch to GDPO only, by name),
so the registry alone cannot carry SPRO. The hooks below, installed by :func:`install` when verl loads our
``verl.plugins`` entry point (or when :mod:`verl_spro.main_ppo` loads it explicitly):

``core_algos.register_adv_est``
    registers ``spro``, so verl's config checks and ``get_adv_estimator_fn("spro")`` know it. Called with the batch
    (a verl whose ``compute_advantage`` passes ``batch`` to estimators that ask for it) it computes SPRO; without
    it, it raises rather than silently dropping the process term.
``ray_trainer.compute_advantage``
    for ``adv_estimator=spro`` computes SPRO from the whole ``DataProto`` and stores the ``spro/*`` metrics in
    ``data.meta_info``; every other estimator goes to verl's function untouched. Installed on every supported verl
    (0.9.x hands the batch to GDPO only, by name; nothing is probed at import). The V1 trainer (``ppo/v1/utils.py``) and
    ``experimental/separation`` import it by name: the post-import hook replaces it before they can.
``v1.utils.compute_advantage_for_multi_trajectories``
    for ``spro``, each agent session takes part through its final output, as verl's GRPO does (see
    :mod:`verl_spro.estimator`); imported by name by the V1 trainer, replaced before it is.
``utils.need_reference_policy``
    is true for ``spro``, so every trainer builds the reference policy (colocated in the hybrid engine, or the
    actor without its LoRA adapter when ``ref_in_actor``) without any KL term switched on.
``utils.config.validate_config``
    checks, for ``adv_estimator=spro`` only, that every hook is in place on a supported verl, ``algorithm.spro.*``,
    ``rollout.n >= 2`` and the reference policy, when ``main_ppo`` validates: before Ray or any GPU starts.
``metric_utils.compute_data_metrics`` and ``v1.trainer_base.PPOTrainer._compute_advantage``
    put the ``spro/*`` metrics into the dict verl logs (legacy trainer and V1 trainer respectively).

Fail-soft: a hook whose target is missing or has another signature is not installed; the module still imports,
every non-SPRO run is untouched, the reason is recorded and warned about once per process, and a run that selects
``spro`` stops at config validation with a message naming the verl version and the hook (:func:`spro_unavailable`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from verl_spro import ESTIMATOR_NAME
from verl_spro.config import SproConfig, SproConfigError
from verl_spro.config import config_get as _get
from verl_spro.dataproto_adapter import (
    bypass_mode,
    collect_spro_metrics,
    compute_spro_for_batch,
    compute_spro_for_sessions,
    is_spro,
    spro_from_tensordict,
    trains_with_spro,
)
from verl_spro.estimator import SproInputError
from verl_spro.import_hooks import HookFailure, when_imported
from verl_spro.metrics import CollapseWatch

__all__ = [
    "HOOKS",
    "SUPPORTED_VERL",
    "SUPPORTED_VERL_RANGE",
    "HookTargetError",
    "check_target",
    "hook_failures",
    "install",
    "spro_unavailable",
    "supported_verl_only",
    "unsupported_verl",
]

logger = logging.getLogger(__name__)

#: The verl releases this plugin is tested on (the same range as the ``verl`` requirement in pyproject.toml).
#: verl 0.9.0 is refused: its hooked functions match 0.9.1's, but its main_ppo differs and it is not tested.
SUPPORTED_VERL_RANGE = ">=0.9.1,<0.10"
SUPPORTED_VERL = SpecifierSet(SUPPORTED_VERL_RANGE)

_WRAPPED = "__verl_spro_wraps__"
_failures: dict[str, str] = {}  # hook target -> why it is not installed
_warned = False
_lock = threading.Lock()


class HookTargetError(RuntimeError):
    """The verl function a hook patches is missing or differs from what the hook was written for."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target = target
        self.reason = reason


def verl_version() -> str:
    """The version of the verl code in this process (``verl.__version__``), or ``"unknown"``."""
    verl = sys.modules.get("verl")
    version = getattr(verl, "__version__", None)
    if version is None:
        try:
            version = importlib.import_module("verl").__version__
        except Exception:
            # verl still initialising: a hook run from inside its own import (verl/__init__ imports
            # verl.plugin.platform before it sets __version__, e.g. when the CPU backend was imported first, as in
            # vLLM's processes). Its installed distribution's version is the one being imported.
            try:
                version = importlib.metadata.version("verl")
            except Exception:  # a verl that does not import at all: nothing of ours can run anyway
                return "unknown"
    return str(version)


def unsupported_verl(version: str | None = None) -> str | None:
    """Why the verl in this process (or ``version``) is outside :data:`SUPPORTED_VERL_RANGE`, in one line; else None.

    Development and local builds inside the range count (``0.9.2.dev0``, ``0.9.1+local``); ``0.10.0.dev0`` does not.
    """
    version = verl_version() if version is None else version
    try:
        if SUPPORTED_VERL.contains(Version(version), prereleases=True):
            return None
    except InvalidVersion:
        pass
    return f"verl {version} is not supported by verl-spro (supported: verl{SUPPORTED_VERL_RANGE})"


# ----------------------------------------------------------------------------------------------------------------
# Targets: look them up and check them, or raise HookTargetError
# ----------------------------------------------------------------------------------------------------------------


def check_target(owner: Any, name: str, label: str, params: Iterable[str] = ()) -> Any:
    """``owner.name``, checked to exist and to be a callable that takes ``params``."""
    value = getattr(owner, name, None)
    if value is None or not callable(value):
        raise HookTargetError(label, "missing")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        raise HookTargetError(label, "has no inspectable signature") from None
    missing = [p for p in params if p not in signature.parameters]
    if missing:
        raise HookTargetError(label, f"signature {signature} lacks {', '.join(missing)}")
    return value


def _replace(
    owner: ModuleType | type, name: str, params: Iterable[str], make_wrapper: Callable[[Callable], Callable]
) -> None:
    """Replace ``owner.name`` by ``make_wrapper(original)``; for a module, also in every loaded verl module that
    imported it by name. ``owner`` may be a class (a method is replaced on the class)."""
    label = f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__
    original = check_target(owner, name, f"{label}.{name}", params)
    if getattr(original, _WRAPPED, None) is not None:
        return
    wrapper = make_wrapper(original)
    setattr(wrapper, _WRAPPED, original)
    if isinstance(owner, ModuleType):
        for mod_name, mod in list(sys.modules.items()):
            if (mod_name == "verl" or mod_name.startswith("verl.")) and getattr(mod, name, None) is original:
                setattr(mod, name, wrapper)
    setattr(owner, name, wrapper)


def _spro_branch(compute_spro: Callable[[dict[str, Any]], None]) -> Callable[[Callable], Callable]:
    """A wrapper maker for verl's advantage functions: ``spro`` goes to ``compute_spro(arguments)``, which fills
    ``arguments["data"]`` in place (returned, as verl's function returns it); every other estimator to verl's own."""

    def make(original: Callable) -> Callable:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if not is_spro(bound.arguments["adv_estimator"]):
                return original(*args, **kwargs)
            compute_spro(bound.arguments)
            return bound.arguments["data"]

        return wrapper

    return make


def supported_verl_only(hook: Callable[[ModuleType], None]) -> Callable[[ModuleType], None]:
    """A hook that changes what verl computes: not installed at all on an unsupported verl (``HookTargetError``)."""

    @functools.wraps(hook)
    def guarded(module: ModuleType) -> None:
        reason = unsupported_verl()
        if reason is not None:
            raise HookTargetError(f"{module.__name__} ({hook.__name__})", reason)
        hook(module)

    return guarded


# ----------------------------------------------------------------------------------------------------------------
# Hooks, one per verl function
# ----------------------------------------------------------------------------------------------------------------


def _spro_adv_estimator(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    batch: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Registry entry for ``spro``: SPRO when verl hands it the batch, otherwise an explanation."""
    if batch is not None:
        return spro_from_tensordict(batch, index, config)
    raise SproInputError(
        "adv_estimator=spro needs old_log_probs and ref_log_prob, which verl's estimator registry does not pass: "
        "call verl.trainer.ppo.ray_trainer.compute_advantage (wrapped by verl-spro) or "
        "verl_spro.dataproto_adapter.compute_spro_for_batch on the whole DataProto"
    )


def _hook_core_algos(core_algos: ModuleType) -> None:
    registry = getattr(core_algos, "ADV_ESTIMATOR_REGISTRY", None)
    if not isinstance(registry, dict):
        raise HookTargetError("verl.trainer.ppo.core_algos.ADV_ESTIMATOR_REGISTRY", "missing")
    register = check_target(core_algos, "register_adv_est", "verl.trainer.ppo.core_algos.register_adv_est")
    if registry.get(ESTIMATOR_NAME) is not _spro_adv_estimator:
        register(ESTIMATOR_NAME)(_spro_adv_estimator)


def _hook_compute_advantage(ray_trainer: ModuleType) -> None:
    params = ("data", "adv_estimator", "norm_adv_by_std_in_grpo", "config")

    def spro(arguments: dict[str, Any]) -> None:
        data = arguments["data"]
        if "response_mask" not in data.batch.keys():
            data.batch["response_mask"] = ray_trainer.compute_response_mask(data)
        compute_spro_for_batch(data, arguments["norm_adv_by_std_in_grpo"], arguments["config"])

    _replace(ray_trainer, "compute_advantage", params, _spro_branch(spro))


def _hook_v1_utils(v1_utils: ModuleType) -> None:
    params = ("data", "batch_keys", "adv_estimator", "norm_adv_by_std_in_grpo", "config")

    def spro(arguments: dict[str, Any]) -> None:
        compute_spro_for_sessions(
            arguments["data"], arguments["batch_keys"], arguments["norm_adv_by_std_in_grpo"], arguments["config"]
        )

    _replace(v1_utils, "compute_advantage_for_multi_trajectories", params, _spro_branch(spro))


def _hook_ppo_utils(ppo_utils: ModuleType) -> None:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def need_reference_policy(config: Any) -> bool:
            if trains_with_spro(config):
                _refuse_if_unavailable(import_hooked=False)  # validate_config's hook made the full check
                return True
            return bool(original(config))

        return need_reference_policy

    _replace(ppo_utils, "need_reference_policy", ("config",), make)


def _check_spro_config(config: Any, use_reference_policy: bool) -> None:
    """What ``validate_config`` adds for ``adv_estimator=spro``: fails before Ray or any worker starts."""
    _refuse_if_unavailable()
    algorithm = _get(config, "algorithm")
    try:
        SproConfig.from_algorithm_config(algorithm)
    except SproConfigError as err:
        raise SproConfigError(f"{err} (adv_estimator=spro)") from None
    problem = beta_overflow(SproConfig.from_algorithm_config(algorithm).beta)
    if problem is not None:
        raise SproConfigError(problem)
    rollout = _get(_get(config, "actor_rollout_ref"), "rollout")
    n = _get(rollout, "n", 1)
    if isinstance(n, bool) or not isinstance(n, int):
        raise SproConfigError(
            f"actor_rollout_ref.rollout.n={n!r} is not an integer: it is the number of samples per prompt; set a "
            "whole number, 2 or more (the paper uses 4)"
        )
    if n < 2:
        raise SproConfigError(
            f"adv_estimator=spro compares the samples of each prompt, but actor_rollout_ref.rollout.n={n}: every "
            "advantage would be 0. Set actor_rollout_ref.rollout.n to 2 or more (the paper uses 4)"
        )
    if not use_reference_policy:
        raise SproConfigError(
            "adv_estimator=spro needs the reference policy, but verl decided not to build it: verl-spro's "
            "need_reference_policy hook is not in effect in this process. Check that `import verl` loads the "
            "'spro' plugin (VERL_USE_EXTERNAL_PLUGINS unset or listing 'spro'), or set "
            "actor_rollout_ref.actor.use_kl_loss=true actor_rollout_ref.actor.kl_loss_coef=0.0"
        )
    if bypass_mode(algorithm) and not _get(rollout, "calculate_log_probs", True):
        raise SproConfigError(
            "adv_estimator=spro with algorithm.rollout_correction.bypass_mode=true uses rollout_log_probs as "
            "old_log_probs: set actor_rollout_ref.rollout.calculate_log_probs=true"
        )


#: The largest finite float32: SPRO's process term is float32, so a beta above it overflows at the first advantage.
FLOAT32_MAX = 3.4028234663852886e38


def beta_overflow(beta: float) -> str | None:
    """Why ``algorithm.spro.beta`` overflows float32 (the first advantage would fail, after a rollout), or None."""
    if abs(beta) > FLOAT32_MAX:
        return (
            f"algorithm.spro.beta={beta:g} is beyond float32 (max {FLOAT32_MAX:.4g}): the process term would "
            "overflow at the first advantage; use a small beta (the paper: 0.05)"
        )
    return None


def _hook_validate_config(config_module: ModuleType) -> None:
    def make(original: Callable) -> Callable:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def validate_config(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            config = bound.arguments["config"]
            if trains_with_spro(config):
                _check_spro_config(config, bool(bound.arguments.get("use_reference_policy")))
            return original(*args, **kwargs)

        return validate_config

    _replace(config_module, "validate_config", ("config", "use_reference_policy"), make)


#: The legacy trainer's run (one per process; its metrics pass through ``compute_data_metrics`` once per step); the
#: V1 trainer keeps its own on the trainer object, under ``_WATCH_ATTR``.
_legacy_watch = CollapseWatch()
_WATCH_ATTR = "_verl_spro_collapse_watch"


def _watch(watch: CollapseWatch, spro_metrics: dict[str, float]) -> None:
    """Feed one training step's ``spro/*`` metrics to ``watch``; its warning, once, goes to verl's log."""
    message = watch.observe(spro_metrics)
    if message is not None:
        logger.warning(message)


def _hook_compute_data_metrics(metric_utils: ModuleType) -> None:
    from verl_spro.dataproto_adapter import SPRO_METRICS_KEY

    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def compute_data_metrics(batch: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            metrics = original(batch, *args, **kwargs)
            spro = getattr(batch, "meta_info", {}).get(SPRO_METRICS_KEY, {})
            metrics.update(spro)
            _watch(_legacy_watch, spro)
            return metrics

        return compute_data_metrics

    _replace(metric_utils, "compute_data_metrics", ("batch",), make)


def _hook_v1_trainer(trainer_base: ModuleType) -> None:
    trainer_cls = getattr(trainer_base, "PPOTrainer", None)
    if trainer_cls is None:
        raise HookTargetError("verl.trainer.ppo.v1.trainer_base.PPOTrainer", "missing")

    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def _compute_advantage(self: Any, batch: Any, metrics: dict) -> Any:
            with collect_spro_metrics() as sink:
                result = original(self, batch, metrics)
            metrics.update(sink)
            if sink:
                if getattr(self, _WATCH_ATTR, None) is None:
                    setattr(self, _WATCH_ATTR, CollapseWatch())
                _watch(getattr(self, _WATCH_ATTR), sink)
            return result

        return _compute_advantage

    _replace(trainer_cls, "_compute_advantage", ("self", "batch", "metrics"), make)


#: verl module -> the hook that patches it (applied right after the module's code runs). The two gate hooks
#: (``need_reference_policy``, ``validate_config``) only add refusals for ``spro``, so they are installed on any
#: verl; the others change what verl computes and are installed on a supported verl only.
HOOKS: dict[str, Callable[[ModuleType], None]] = {
    "verl.trainer.ppo.core_algos": supported_verl_only(_hook_core_algos),
    "verl.trainer.ppo.utils": _hook_ppo_utils,
    "verl.utils.config": _hook_validate_config,
    "verl.trainer.ppo.metric_utils": supported_verl_only(_hook_compute_data_metrics),
    "verl.trainer.ppo.ray_trainer": supported_verl_only(_hook_compute_advantage),
    "verl.trainer.ppo.v1.utils": supported_verl_only(_hook_v1_utils),
    "verl.trainer.ppo.v1.trainer_base": supported_verl_only(_hook_v1_trainer),
}


# ----------------------------------------------------------------------------------------------------------------
# Failures: recorded, warned about once, and turned into a refusal for spro runs
# ----------------------------------------------------------------------------------------------------------------


def _record(failure: HookFailure) -> None:
    global _warned
    error = failure.error
    target = error.target if isinstance(error, HookTargetError) else failure.module
    reason = error.reason if isinstance(error, HookTargetError) else f"{type(error).__name__}: {error}"
    with _lock:
        _failures[target] = reason
        first = not _warned
        _warned = True
    if first:
        logger.warning(
            "verl-spro: hook on %s not installed on verl %s (%s); adv_estimator=spro runs will stop at config "
            "validation, every other estimator is unaffected",
            target,
            verl_version(),
            reason,
        )


def hook_failures() -> dict[str, str]:
    """The hooks not installed in this process: verl target -> why."""
    with _lock:
        return dict(_failures)


def spro_unavailable(import_hooked: bool = True) -> str | None:
    """Why ``adv_estimator=spro`` cannot run in this process, in one line, or ``None`` when it can.

    With ``import_hooked`` (what ``validate_config``'s hook does), imports every hooked verl module first (their
    hooks run then), so that a target missing in a module the driver would not import before Ray (the trainers) is
    found before Ray starts; without it, only the modules already imported count (a cheap re-check).
    """
    reason = unsupported_verl()
    if reason is not None:
        return f"adv_estimator=spro cannot run: {reason}; install a supported verl or use another estimator"
    if not _installed:
        return "adv_estimator=spro cannot run: the verl-spro plugin is not loaded in this process"
    policy = plugins_policy_excludes_spro()
    if policy is not None:
        return (
            f"adv_estimator=spro cannot run with VERL_USE_EXTERNAL_PLUGINS={policy}: verl would not load verl-spro "
            "in its Ray workers. Unset it, or list 'spro' in it"
        )
    for module_name in HOOKS if import_hooked else ():
        try:
            importlib.import_module(module_name)
        except Exception as err:
            with _lock:
                _failures.setdefault(module_name, f"module does not import ({type(err).__name__}: {err})")
    failures = hook_failures()
    if not failures:
        return None
    what = "; ".join(f"{target}: {reason}" for target, reason in failures.items())
    return (
        f"adv_estimator=spro cannot run on verl {verl_version()}: verl-spro could not install its hook(s) on "
        f"{what}. verl-spro supports verl{SUPPORTED_VERL_RANGE}; every other estimator is unaffected"
    )


def _refuse_if_unavailable(import_hooked: bool = True) -> None:
    reason = spro_unavailable(import_hooked)
    if reason is not None:
        raise SproConfigError(reason)


def plugins_policy_excludes_spro(environ: dict[str, str] | None = None) -> str | None:
    """The value of ``VERL_USE_EXTERNAL_PLUGINS`` when it keeps verl from loading us in new processes, else None."""
    env = os.environ if environ is None else environ
    policy = env.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "auto":
        return None
    allowed = {name.strip() for name in policy.split(",") if name.strip()}
    return None if ESTIMATOR_NAME in allowed else env["VERL_USE_EXTERNAL_PLUGINS"]


_installed = False


def install() -> None:
    """Install every hook (idempotent, fail-soft). verl calls this through the ``verl.plugins`` entry point."""
    global _installed
    if _installed:
        return
    _installed = True
    for module_name, hook in HOOKS.items():
        when_imported(module_name, hook, on_error=_record)
