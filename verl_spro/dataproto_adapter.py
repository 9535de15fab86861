"""SPRO on verl's data: a ``DataProto`` (or its ``TensorDict`` batch) in, advantages and ``spro/*`` metrics out.

No verl import here and no patching: :mod:`verl_spro.verl_hooks` decides where verl calls these functions.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from verl_spro import ESTIMATOR_NAME
from verl_spro.config import SproConfig
from verl_spro.config import config_get as _get
from verl_spro.estimator import (
    SproInputError,
    SproOutput,
    compute_spro_advantage,
    session_final_rows,
    spread_to_sessions,
)
from verl_spro.metrics import spro_metrics

__all__ = [
    "SPRO_METRICS_KEY",
    "collect_spro_metrics",
    "compute_spro_for_batch",
    "compute_spro_for_sessions",
    "estimator_name",
    "is_spro",
    "parse_session_keys",
    "spro_from_tensordict",
    "trains_with_spro",
]

#: ``DataProto.meta_info`` key under which the batch's ``spro/*`` metrics are left.
SPRO_METRICS_KEY = "spro_metrics"

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


def bypass_mode(algorithm: Any) -> bool:
    """verl's ``algorithm.rollout_correction.bypass_mode``: no old-log-prob recompute, rollout log-probs stand in."""
    return bool(_get(_get(algorithm, "rollout_correction"), "bypass_mode", False))


def _old_log_probs(batch: Any, algorithm: Any) -> torch.Tensor:
    """``old_log_probs``; ``rollout_log_probs`` in bypass mode (verl then skips the old-log-prob recompute)."""
    if bypass_mode(algorithm) and "rollout_log_probs" in batch.keys():
        return batch["rollout_log_probs"]
    if "old_log_probs" in batch.keys():
        return batch["old_log_probs"]
    if bypass_mode(algorithm):
        raise SproInputError(
            "adv_estimator=spro in bypass mode needs rollout_log_probs, which the batch lacks: set "
            "actor_rollout_ref.rollout.calculate_log_probs=true"
        )
    raise SproInputError(
        "adv_estimator=spro needs old_log_probs (log pi_old of the sampled tokens), which the batch lacks: verl "
        "computes them before the advantage unless algorithm.rollout_correction.bypass_mode=true, in which case "
        "set actor_rollout_ref.rollout.calculate_log_probs=true so that rollout_log_probs stand in"
    )


def _inputs(batch: Any, config: Any) -> dict[str, torch.Tensor]:
    """The four ``[B, T]`` tensors SPRO reads from a verl batch (a ``TensorDict``), with what to do when one lacks."""
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
    return {
        "token_level_rewards": batch["token_level_rewards"],
        "response_mask": batch["response_mask"],
        "old_log_probs": _old_log_probs(batch, config),
        "ref_log_probs": batch["ref_log_prob"],
    }


def _spro(
    inputs: dict[str, torch.Tensor], index: Any, norm_adv_by_std_in_grpo: bool, config: Any
) -> tuple[SproOutput, float]:
    """SPRO with ``algorithm.spro.*`` read (and validated) from ``config``; returns the output and the beta used."""
    spro_cfg = SproConfig.from_algorithm_config(config)
    out = compute_spro_advantage(
        **inputs,
        index=index,
        beta=spro_cfg.beta,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        msa_norm_by_std=spro_cfg.msa_norm_by_std,
    )
    return out, spro_cfg.beta


def _publish(out: SproOutput, beta: float, meta_info: dict | None) -> dict[str, float]:
    """The ``spro/*`` metrics: into ``meta_info`` (legacy trainer) and the active :func:`collect_spro_metrics`."""
    metrics = spro_metrics(out, beta)
    if meta_info is not None:
        meta_info[SPRO_METRICS_KEY] = metrics
    sink = _metrics_sink.get()
    if sink is not None:
        sink.update(metrics)
    return metrics


def compute_spro_for_batch(data: Any, norm_adv_by_std_in_grpo: bool = True, config: Any = None) -> dict[str, float]:
    """SPRO on a verl ``DataProto``, every row a group member: writes ``advantages`` and ``returns``.

    Args:
        data: ``DataProto`` with ``batch["token_level_rewards"]``, ``["response_mask"]``, ``["old_log_probs"]``
            (or ``["rollout_log_probs"]`` in bypass mode), ``["ref_log_prob"]`` (all ``[B, T]``) and
            ``non_tensor_batch["uid"]`` (``[B]``).
        norm_adv_by_std_in_grpo: verl's flag for the outcome term.
        config: verl's ``algorithm`` node; ``algorithm.spro.*`` is read from it.

    Returns:
        The ``spro/*`` metrics, also stored in ``data.meta_info[SPRO_METRICS_KEY]``.
    """
    out, beta = _spro(_inputs(data.batch, config), data.non_tensor_batch.get("uid"), norm_adv_by_std_in_grpo, config)
    data.batch["advantages"] = out.advantages
    data.batch["returns"] = out.returns
    return _publish(out, beta, data.meta_info)


def spro_from_tensordict(batch: Any, index: Any, config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """SPRO from the batch verl hands to an estimator whose signature asks for ``batch`` (a verl that does so).

    Args:
        batch: ``DataProto.batch`` (a ``TensorDict`` of ``[B, T]`` tensors, as in :func:`compute_spro_for_batch`).
        index: ``[B]`` uids; config: verl's ``algorithm`` node (``norm_adv_by_std_in_grpo`` is read from it).

    Returns:
        ``(advantages, returns)``, both ``[B, T]``.
    """
    out, beta = _spro(_inputs(batch, config), index, bool(_get(config, "norm_adv_by_std_in_grpo", True)), config)
    _publish(out, beta, None)
    return out.advantages, out.returns


def parse_session_keys(batch_keys: Sequence[str]) -> tuple[list[str], list[int]]:
    """verl V1's TransferQueue keys ``{uid}_{session_id}_{index}`` -> ``(session labels, output indices)``."""
    sessions, indices = [], []
    for key in batch_keys:
        fields = str(key).rsplit("_", 2)
        if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
            raise SproInputError(f"batch key {key!r} is not verl's {{uid}}_{{session_id}}_{{index}}")
        sessions.append(f"{fields[0]}_{fields[1]}")
        indices.append(int(fields[2]))
    return sessions, indices


def compute_spro_for_sessions(
    data: Any, batch_keys: Sequence[str], norm_adv_by_std_in_grpo: bool = True, config: Any = None
) -> dict[str, float]:
    """SPRO on a V1 batch of agent sessions that may return several outputs each (``batch_keys`` name them).

    Each session takes part through its final output, as in verl's GRPO multi-trajectory rule; see
    :mod:`verl_spro.estimator` for the process term of the other outputs. Writes ``advantages`` and ``returns``
    (``[B, T]``) for every row.

    Returns:
        The ``spro/*`` metrics of the final outputs.
    """
    if len(batch_keys) != len(data):
        raise SproInputError(f"{len(batch_keys)} batch keys for {len(data)} rows")
    final_rows, owner = session_final_rows(*parse_session_keys(batch_keys))
    if len(final_rows) == len(data):  # one output per session: every row is a member, no selection needed
        return compute_spro_for_batch(data, norm_adv_by_std_in_grpo, config)
    inputs = _inputs(data.batch, config)
    rows = torch.as_tensor(final_rows, dtype=torch.long, device=inputs["response_mask"].device)
    uid = data.non_tensor_batch.get("uid")
    final, beta = _spro(
        {k: v[rows] for k, v in inputs.items()},
        None if uid is None else [uid[i] for i in final_rows],
        norm_adv_by_std_in_grpo,
        config,
    )
    advantages = spread_to_sessions(final, inputs["response_mask"], final_rows, owner)
    data.batch["advantages"] = advantages
    data.batch["returns"] = advantages
    return _publish(final, beta, data.meta_info)


@contextmanager
def collect_spro_metrics() -> Iterator[dict[str, float]]:
    """Collect the ``spro/*`` metrics of every SPRO computation in this context (used for the V1 trainer)."""
    sink: dict[str, float] = {}
    token = _metrics_sink.set(sink)
    try:
        yield sink
    finally:
        _metrics_sink.reset(token)
