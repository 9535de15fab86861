"""SPRO's configuration: the ``algorithm.spro`` node of verl's Hydra tree.

With verl's stock config the keys are new, so they are passed as ``+algorithm.spro.beta=0.1``; the project's
configs under ``configs/`` declare them, so there plain ``algorithm.spro.beta=0.1`` works. Either way the values
are read here, from the ``algorithm`` node verl hands to ``compute_advantage`` as ``config``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["SproConfig", "SproConfigError", "config_get"]


class SproConfigError(ValueError):
    """An ``algorithm.spro.*`` value or key that SPRO cannot use."""


@dataclass(frozen=True)
class SproConfig:
    """SPRO's options, read from ``algorithm.spro``.

    Attributes:
        beta: Intrinsic reward scale: ``p = beta * (log pi_old - log pi_ref)``. The paper's value, 0.05, keeps the
            process term small next to the +-1-ish normalised outcome term. ``0`` gives exactly verl's GRPO.
            Must be finite and non-negative (a negative beta rewards moving *towards* the reference).
        msa_norm_by_std: Divide the masked step advantage by the std of the active group members at each
            position. Off in the paper: the raw CPR differences already carry the process signal's scale.
    """

    beta: float = 0.05
    msa_norm_by_std: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float):
            raise SproConfigError(f"algorithm.spro.beta must be a number, got {self.beta!r}")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise SproConfigError(
                f"algorithm.spro.beta must be finite and >= 0, got {self.beta!r} (the paper uses 0.05; 0 is GRPO)"
            )
        if not isinstance(self.msa_norm_by_std, bool):
            raise SproConfigError(f"algorithm.spro.msa_norm_by_std must be true or false, got {self.msa_norm_by_std!r}")

    @classmethod
    def from_algorithm_config(cls, algorithm: Any) -> SproConfig:
        """Read and validate ``algorithm.spro`` from verl's ``algorithm`` node.

        Args:
            algorithm: verl's ``config.algorithm`` (an OmegaConf ``DictConfig``, verl's ``AlgoConfig`` or a plain
                dict), or ``None`` for the defaults.

        Raises:
            SproConfigError: unknown key under ``algorithm.spro`` (with the closest valid name), or a bad value.
        """
        node = config_get(algorithm, "spro")
        if node is None:
            return cls()
        if hasattr(node, "items"):
            values = {str(k): v for k, v in node.items() if k != "_target_"}
        else:
            raise SproConfigError(f"algorithm.spro must be a mapping of options, got {node!r}")
        valid = [f.name for f in fields(cls)]
        for key in values:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"did you mean algorithm.spro.{close[0]}?" if close else f"valid keys: {', '.join(valid)}"
                raise SproConfigError(f"unknown key algorithm.spro.{key}: {hint}")
        return cls(**values)


def config_get(node: Any, key: str, default: Any = None) -> Any:
    """``node.key`` of an OmegaConf node, a dict or a dataclass config (verl passes all three), else ``default``."""
    if node is None:
        return default
    if hasattr(node, "get"):
        return node.get(key, default)
    return getattr(node, key, default)
