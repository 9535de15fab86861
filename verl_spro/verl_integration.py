"""SPRO inside verl 0.9: each hook is named after the verl function it serves.

verl's custom-estimator signature hands an estimator ``token_level_rewards``, ``response_mask``, ``index`` and
``config``, not the log-probs SPRO's process reward is made of, so the registry alone cannot carry SPRO. The
hooks below, installed by :func:`install` when verl loads our ``verl.plugins`` entry point:

``core_algos.register_adv_est``
    registers ``spro``, so verl's config checks and ``get_adv_estimator_fn("spro")`` know it. Called through the
    registry alone (without the batch) it raises, rather than silently dropping the process term.
``ray_trainer.compute_advantage``
    for ``adv_estimator=spro`` computes SPRO from the whole ``DataProto`` (old/ref log-probs included) and stores
    the ``spro/*`` metrics in ``data.meta_info``; every other estimator goes to verl's function untouched. The V1
    trainer (``ppo/v1/utils.py``) and ``experimental/separation`` import it by name: the post-import hook replaces
    it before they can.
``utils.need_reference_policy``
    is true for ``spro``, so every trainer builds the reference policy (colocated in the hybrid engine, or the
    actor without its LoRA adapter when ``ref_in_actor``) without any KL term switched on.
``utils.config.validate_config``
    checks ``algorithm.spro.*`` and the reference policy when ``main_ppo`` validates, before Ray or any GPU starts.
``metric_utils.compute_data_metrics`` and ``v1.trainer_base.PPOTrainer._compute_advantage``
    put the ``spro/*`` metrics into the dict verl logs (legacy trainer and V1 trainer respectively).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch

from verl_spro import ESTIMATOR_NAME
from verl_spro.config import SproConfig, SproConfigError
from verl_spro.config import config_get as _get
from verl_spro.estimator import SproInputError, compute_spro_advantage
from verl_spro.import_hooks import when_imported
from verl_spro.metrics import spro_metrics

__all__ = [
    "SPRO_METRICS_KEY",
    "collect_spro_metrics",
    "compute_spro_for_batch",
    "estimator_name",
    "install",
    "is_spro",
    "trains_with_spro",
]


#: ``DataProto.meta_info`` key under which :func:`compute_advantage` leaves the batch's ``spro/*`` metrics.
SPRO_METRICS_KEY = "spro_metrics"

_WRAPPED = "__verl_spro_wraps__"
_metrics_sink: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("spro_metrics", default=None)


def estimator_name(adv_estimator: Any) -> str:
    """The estimator's name, whether given as a str or as a str-valued enum member (verl's AdvantageEstimator)."""
    return str(getattr(adv_estimator, "value", adv_estimator))


def is_spro(adv_estimator: Any) -> bool:
    """True for ``"spro"`` given as a str or a str-valued enum member."""
    return estimator_name(adv_estimator) == ESTIMATOR_NAME


def trains_with_spro(config: Any) -> bool:
    """True when a full trainer config (``config.algorithm.adv_estimator``) selects SPRO."""
    return is_spro(_get(_get(config, "algorithm"), "adv_estimator"))


# ----------------------------------------------------------------------------------------------------------------
# The computation on a DataProto
# ----------------------------------------------------------------------------------------------------------------


def _bypass_mode(algorithm: Any) -> bool:
    return bool(_get(_get(algorithm, "rollout_correction"), "bypass_mode", False))


def _old_log_probs(batch: Any, algorithm: Any) -> torch.Tensor:
    """``old_log_probs``; ``rollout_log_probs`` in bypass mode (verl then skips the old-log-prob recompute)."""
    if _bypass_mode(algorithm) and "rollout_log_probs" in batch.keys():
        return batch["rollout_log_probs"]
    if "old_log_probs" in batch.keys():
        return batch["old_log_probs"]
    if _bypass_mode(algorithm):
        raise SproInputError(
            "adv_estimator=spro in bypass mode needs rollout_log_probs, which the batch lacks: set "
            "actor_rollout_ref.rollout.calculate_log_probs=true"
        )
    raise SproInputError(
        "adv_estimator=spro needs old_log_probs (log pi_old of the sampled tokens), which the batch lacks: verl "
        "computes them before the advantage unless algorithm.rollout_correction.bypass_mode=true, in which case "
        "set actor_rollout_ref.rollout.calculate_log_probs=true so that rollout_log_probs stand in"
    )


def compute_spro_for_batch(data: Any, norm_adv_by_std_in_grpo: bool = True, config: Any = None) -> dict[str, float]:
    """SPRO on a verl ``DataProto``: writes ``advantages`` and ``returns`` into ``data.batch``.

    Args:
        data: ``DataProto`` with ``batch["token_level_rewards"]``, ``["response_mask"]``, ``["old_log_probs"]``
            (or ``["rollout_log_probs"]`` in bypass mode), ``["ref_log_prob"]`` (all ``[B, T]``) and
            ``non_tensor_batch["uid"]`` (``[B]``).
        norm_adv_by_std_in_grpo: verl's flag for the outcome term.
        config: verl's ``algorithm`` node; ``algorithm.spro.*`` is read from it.

    Returns:
        The ``spro/*`` metrics, also stored in ``data.meta_info[SPRO_METRICS_KEY]``.
    """
    spro_cfg = SproConfig.from_algorithm_config(config)
    batch = data.batch
    if batch is None or "response_mask" not in batch.keys():
        raise SproInputError("adv_estimator=spro needs batch['response_mask'] ([batch, response_length])")
    if "ref_log_prob" not in batch.keys():
        raise SproInputError(
            "adv_estimator=spro needs ref_log_prob, which the batch lacks: verl did not run the reference policy. "
            "verl-spro makes verl build it for adv_estimator=spro; if this process did not load the plugin "
            "(VERL_USE_EXTERNAL_PLUGINS=none, or a list without 'spro'), unset that variable. Fallback: "
            "actor_rollout_ref.actor.use_kl_loss=true actor_rollout_ref.actor.kl_loss_coef=0.0"
        )
    if "token_level_rewards" not in batch.keys():
        raise SproInputError("adv_estimator=spro needs batch['token_level_rewards'] ([batch, response_length])")
    out = compute_spro_advantage(
        token_level_rewards=batch["token_level_rewards"],
        response_mask=batch["response_mask"],
        old_log_probs=_old_log_probs(batch, config),
        ref_log_probs=batch["ref_log_prob"],
        index=data.non_tensor_batch.get("uid"),
        beta=spro_cfg.beta,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        msa_norm_by_std=spro_cfg.msa_norm_by_std,
    )
    batch["advantages"] = out.advantages
    batch["returns"] = out.returns
    metrics = spro_metrics(out, spro_cfg.beta)
    data.meta_info[SPRO_METRICS_KEY] = metrics
    sink = _metrics_sink.get()
    if sink is not None:
        sink.update(metrics)
    return metrics


@contextmanager
def collect_spro_metrics() -> Iterator[dict[str, float]]:
    """Collect the ``spro/*`` metrics of every SPRO computation in this context (used for the V1 trainer)."""
    sink: dict[str, float] = {}
    token = _metrics_sink.set(sink)
    try:
        yield sink
    finally:
        _metrics_sink.reset(token)


# ----------------------------------------------------------------------------------------------------------------
# Hooks, one per verl function
# ----------------------------------------------------------------------------------------------------------------


def _replace(module: ModuleType, name: str, make_wrapper: Callable[[Callable], Callable]) -> None:
    """Replace ``module.name`` by ``make_wrapper(original)`` there and in every loaded verl module bound to it."""
    original = getattr(module, name)
    if getattr(original, _WRAPPED, None) is not None:
        return
    wrapper = make_wrapper(original)
    setattr(wrapper, _WRAPPED, original)
    for mod_name, mod in list(sys.modules.items()):
        if (mod_name == "verl" or mod_name.startswith("verl.")) and getattr(mod, name, None) is original:
            setattr(mod, name, wrapper)
    setattr(module, name, wrapper)


def _spro_adv_estimator_without_batch(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, **_: Any):
    """Registry entry for ``spro``: the registry's signature has no log-probs, so this can only explain."""
    raise SproInputError(
        "adv_estimator=spro needs old_log_probs and ref_log_prob, which verl's estimator registry does not pass: "
        "call verl.trainer.ppo.ray_trainer.compute_advantage (wrapped by verl-spro) or "
        "verl_spro.verl_integration.compute_spro_for_batch on the whole DataProto"
    )


def _hook_core_algos(core_algos: ModuleType) -> None:
    if core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not _spro_adv_estimator_without_batch:
        core_algos.register_adv_est(ESTIMATOR_NAME)(_spro_adv_estimator_without_batch)


def _hook_compute_advantage(ray_trainer: ModuleType) -> None:
    def make(original: Callable) -> Callable:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def compute_advantage(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if not is_spro(bound.arguments["adv_estimator"]):
                return original(*args, **kwargs)
            data = bound.arguments["data"]
            if "response_mask" not in data.batch.keys():
                data.batch["response_mask"] = ray_trainer.compute_response_mask(data)
            compute_spro_for_batch(data, bound.arguments["norm_adv_by_std_in_grpo"], bound.arguments["config"])
            return data

        return compute_advantage

    _replace(ray_trainer, "compute_advantage", make)


def _hook_ppo_utils(ppo_utils: ModuleType) -> None:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def need_reference_policy(config: Any) -> bool:
            return bool(original(config)) or trains_with_spro(config)

        return need_reference_policy

    _replace(ppo_utils, "need_reference_policy", make)


def _check_spro_config(config: Any, use_reference_policy: bool) -> None:
    """What ``validate_config`` adds for ``adv_estimator=spro``: fails before Ray or any worker starts."""
    algorithm = _get(config, "algorithm")
    try:
        SproConfig.from_algorithm_config(algorithm)
    except SproConfigError as err:
        raise SproConfigError(f"{err} (adv_estimator=spro)") from None
    if not use_reference_policy:
        raise SproConfigError(
            "adv_estimator=spro needs the reference policy, but verl decided not to build it: verl-spro's "
            "need_reference_policy hook is not in effect in this process. Check that `import verl` loads the "
            "'spro' plugin (VERL_USE_EXTERNAL_PLUGINS unset or listing 'spro'), or set "
            "actor_rollout_ref.actor.use_kl_loss=true actor_rollout_ref.actor.kl_loss_coef=0.0"
        )
    if _bypass_mode(algorithm):
        rollout = _get(_get(_get(config, "actor_rollout_ref"), "rollout"), "calculate_log_probs", True)
        if not rollout:
            raise SproConfigError(
                "adv_estimator=spro with algorithm.rollout_correction.bypass_mode=true uses rollout_log_probs as "
                "old_log_probs: set actor_rollout_ref.rollout.calculate_log_probs=true"
            )


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

    _replace(config_module, "validate_config", make)


def _hook_compute_data_metrics(metric_utils: ModuleType) -> None:
    def make(original: Callable) -> Callable:
        @functools.wraps(original)
        def compute_data_metrics(batch: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            metrics = original(batch, *args, **kwargs)
            metrics.update(getattr(batch, "meta_info", {}).get(SPRO_METRICS_KEY, {}))
            return metrics

        return compute_data_metrics

    _replace(metric_utils, "compute_data_metrics", make)


def _hook_v1_trainer(trainer_base: ModuleType) -> None:
    trainer_cls = trainer_base.PPOTrainer
    original = trainer_cls._compute_advantage
    if getattr(original, _WRAPPED, None) is not None:
        return

    @functools.wraps(original)
    def _compute_advantage(self: Any, batch: Any, metrics: dict) -> Any:
        with collect_spro_metrics() as sink:
            result = original(self, batch, metrics)
        metrics.update(sink)
        return result

    setattr(_compute_advantage, _WRAPPED, original)
    trainer_cls._compute_advantage = _compute_advantage


#: verl module -> the hook that patches it (applied right after the module's code runs).
HOOKS: dict[str, Callable[[ModuleType], None]] = {
    "verl.trainer.ppo.core_algos": _hook_core_algos,
    "verl.trainer.ppo.utils": _hook_ppo_utils,
    "verl.utils.config": _hook_validate_config,
    "verl.trainer.ppo.metric_utils": _hook_compute_data_metrics,
    "verl.trainer.ppo.ray_trainer": _hook_compute_advantage,
    "verl.trainer.ppo.v1.trainer_base": _hook_v1_trainer,
}


def install() -> None:
    """Install every hook (idempotent). verl calls this through the ``verl.plugins`` entry point."""
    for module_name, hook in HOOKS.items():
        when_imported(module_name, hook)
