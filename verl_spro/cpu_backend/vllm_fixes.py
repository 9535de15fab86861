"""What vLLM's own CPU build needs to serve as verl's rollout: weights that verl's sync can overwrite.

When vLLM on a CPU loads a model, ``process_weights_after_loading`` hands every linear layer to
``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``, which packs the weight for oneDNN and, for
linear layers, replaces ``layer.weight`` by an empty tensor. verl's weight sync then fails at its first bucket
("Attempted to load weight (torch.Size([64, 64])) into parameter (torch.Size([0]))"), and the LM head, whose
weight is kept, would keep computing from its stale packed copy after every update. :func:`install` replaces that
function by one that keeps ``layer.weight`` and computes ``torch.nn.functional.linear`` from it at every call, so
whatever verl loads into the weight is what the next generation uses (oneDNN's faster matmul is given up).

It runs in every vLLM process (vLLM starts its engine and workers with ``spawn``) through vLLM's documented
``vllm.general_plugins`` entry point, :mod:`verl_spro.vllm_plugin`, and only where the CPU backend is in effect.
Unlike verl's hooks it is not fail-soft: a CPU run cannot sync weights without it, so a target that is missing or
differs stops the engine with one line naming it (:class:`VllmFixError`); :func:`check` says the same up front.

``VERL_SPRO_VLLM_WEIGHT_CHECKSUM=1`` also prints a checksum of the engine's weights after every load
(:data:`CHECKSUM_PREFIX`), which the tests compare with the actor's.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

#: vLLM releases whose internals these fixes were written for and run on (verl 0.9.1 pins vllm==0.24.0).
SUPPORTED_VLLM = ">=0.24.0,<0.25"
GEMM_TARGET = "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm"
LOAD_TARGET = "vllm.model_executor.model_loader.utils.process_weights_after_loading"
CHECKSUM_ENV = "VERL_SPRO_VLLM_WEIGHT_CHECKSUM"
CHECKSUM_PREFIX = "verl_spro.cpu_backend: vLLM weights checksum"
_FIXED = "__verl_spro_vllm_fix__"

__all__ = ["CHECKSUM_ENV", "CHECKSUM_PREFIX", "GEMM_TARGET", "SUPPORTED_VLLM", "VllmFixError", "check", "install"]


class VllmFixError(RuntimeError):
    """A vLLM function the CPU backend replaces is missing, differs, or belongs to an untested vLLM."""


def _split(target: str) -> tuple[str, str]:
    module, _, name = target.rpartition(".")
    return module, name


def _lookup(target: str, params: tuple[str, ...]) -> tuple[Any, Callable[..., Any]]:
    """The module and the function ``target`` names, checked to take ``params``; else :class:`VllmFixError`."""
    module_name, name = _split(target)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise VllmFixError(f"{target}: its module does not import ({type(err).__name__}: {err})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise VllmFixError(f"{target}: missing in this vLLM")
    original = getattr(function, _FIXED, function)
    actual = list(inspect.signature(original).parameters)
    if actual[: len(params)] != list(params):
        raise VllmFixError(f"{target}: expected parameters ({', '.join(params)}), found ({', '.join(actual)})")
    return module, function


def _check_version() -> None:
    import vllm
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    version = str(getattr(vllm, "__version__", "unknown"))
    try:
        supported = Version(Version(version).public) in SpecifierSet(SUPPORTED_VLLM)
    except InvalidVersion:
        supported = False
    if not supported:
        raise VllmFixError(
            f"vLLM {version}: verl-spro's CPU backend fixes {GEMM_TARGET} of vllm{SUPPORTED_VLLM} only "
            "(install it with `bash scripts/setup_cpu.sh --vllm`)"
        )


def check() -> str | None:
    """None when :func:`install` can fix this process's vLLM, else a one-line reason naming the target."""
    try:
        _check_version()
        _lookup(GEMM_TARGET, ("layer", "remove_weight"))
        _lookup(LOAD_TARGET, ("model", "model_config", "target_device"))
    except VllmFixError as err:
        return str(err)
    return None


def _keep_weight(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def dispatch_keeping_weight(layer: torch.nn.Module, remove_weight: bool) -> None:
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.is_meta or weight.ndim != 2:
            return original(layer, remove_weight)  # missing layers and conv weights: vLLM's own handling
        # The weight passed at each call is layer.weight itself, which verl's sync overwrites in place.
        layer.cpu_linear = torch.nn.functional.linear
        return None

    setattr(dispatch_keeping_weight, _FIXED, original)
    return dispatch_keeping_weight


def weight_checksum(model: torch.nn.Module) -> tuple[float, float, int]:
    """(sum, sum of absolute values, element count) of ``model``'s parameters in float64.

    Vocabulary rows vLLM adds as padding (beyond ``org_vocab_size``) are left out, so the sums equal those of the
    Hugging Face checkpoint the weights came from (fused q/k/v and gate/up projections hold the same elements).
    """
    total, total_abs, count = 0.0, 0.0, 0
    padded_rows = {
        f"{name}.weight": module.org_vocab_size
        for name, module in model.named_modules()
        if isinstance(getattr(module, "org_vocab_size", None), int)
    }
    for name, param in model.named_parameters():
        values = param.detach()
        if name in padded_rows:
            values = values[: padded_rows[name]]
        values = values.double()
        total += float(values.sum())
        total_abs += float(values.abs().sum())
        count += values.numel()
    return total, total_abs, count


def _report_checksum(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def process_weights_after_loading(model: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        original(model, *args, **kwargs)
        total, total_abs, count = weight_checksum(model)
        print(f"{CHECKSUM_PREFIX} sum={total!r} abs={total_abs!r} n={count}", file=sys.stderr, flush=True)

    setattr(process_weights_after_loading, _FIXED, original)
    return process_weights_after_loading


def _replace(target: str, params: tuple[str, ...], make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    module, function = _lookup(target, params)
    if getattr(function, _FIXED, None) is not None:
        return
    name = _split(target)[1]
    replacement = make(function)
    # vLLM 0.24 imports both names inside the calling functions, at call time; a module that imported one at its
    # top level gets the replacement too.
    for other in list(sys.modules.values()):
        if getattr(other, "__name__", "").startswith("vllm.") and getattr(other, name, None) is function:
            setattr(other, name, replacement)
    setattr(module, name, replacement)


def install() -> None:
    """Replace :data:`GEMM_TARGET` in this process (and, with ``VERL_SPRO_VLLM_WEIGHT_CHECKSUM=1``, report a
    checksum after each weight load); raises :class:`VllmFixError` with a one-line reason when it cannot."""
    _check_version()
    _replace(GEMM_TARGET, ("layer", "remove_weight"), _keep_weight)
    if os.environ.get(CHECKSUM_ENV) == "1":
        _replace(LOAD_TARGET, ("model", "model_config", "target_device"), _report_checksum)


def model_problem(model_dir: str) -> str | None:
    """None when vLLM's CPU attention serves the head size of the Hugging Face model in ``model_dir`` (or it has
    no readable ``config.json``: a hub name, left to vLLM), else a one-line reason naming the model and sizes."""
    import json
    from pathlib import Path

    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        head_size = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_size in supported:
        return None
    return (
        f"model {model_dir}: head size {head_size} (hidden_size / num_attention_heads), which vLLM's CPU attention "
        f"does not serve (it serves {', '.join(map(str, supported))}): use --rollout hf or another model "
        "(actor_rollout_ref.model.path)"
    )


if __name__ == "__main__":
    # `python -m verl_spro.cpu_backend.vllm_fixes [MODEL_DIR]`: "ok", or why --rollout vllm cannot run (one line).
    print(check() or (model_problem(sys.argv[1]) if len(sys.argv) > 1 else None) or "ok")
