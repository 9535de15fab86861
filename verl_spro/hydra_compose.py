"""Compose a training config exactly as ``python -m verl.trainer.main_ppo`` would, without running it.

``main_ppo`` is ``@hydra.main(config_path="config", config_name="ppo_trainer", version_base=None)`` in
``verl.trainer``; ``--config-path``/``--config-name`` on its command line replace both. Hydra's compose API
with the same directory, name and overrides gives the same tree, including the ``hydra.searchpath`` that our
configs under ``configs/`` use to build on verl's ``pkg://verl.trainer.config``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: verl's own config module and the config name ``main_ppo`` uses by default.
VERL_CONFIG_MODULE = "verl.trainer.config"
DEFAULT_CONFIG_NAME = "ppo_trainer"

#: This repository's ``configs/`` (present in a source checkout, not in a wheel).
REPO_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def compose_trainer_config(
    config_path: str | None, config_name: str | None, overrides: Sequence[str] = ()
) -> DictConfig:
    """Return the config ``main_ppo --config-path=config_path --config-name=config_name overrides...`` sees.

    Args:
        config_path: a directory of Hydra configs (relative paths are taken from the current directory; pass
            an absolute path to ``main_ppo`` itself, where Hydra resolves it differently), or None for verl's
            own ``verl/trainer/config``.
        config_name: the primary config (with or without ``.yaml``); None means ``ppo_trainer`` as in
            ``main_ppo``.
        overrides: Hydra command-line overrides (``key=value``, ``+key=value``, ``~key``).

    Raises:
        hydra.errors.HydraException (and subclasses) when the config does not compose, e.g. an unknown key
        without ``+`` or a missing config file; FileNotFoundError when ``config_path`` is not a directory.
    """
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    name = config_name or DEFAULT_CONFIG_NAME
    if name.endswith(".yaml"):
        name = name[: -len(".yaml")]

    # A test or a notebook may have left a Hydra instance behind; the context managers below refuse to nest.
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()

    if config_path is None:
        context = initialize_config_module(config_module=VERL_CONFIG_MODULE, version_base=None)
    else:
        config_dir = os.path.abspath(os.path.expanduser(config_path))
        if not os.path.isdir(config_dir):
            raise FileNotFoundError(f"config path {config_path!r} is not a directory ({config_dir})")
        context = initialize_config_dir(config_dir=config_dir, version_base=None)
    with context:
        return compose(config_name=name, overrides=list(overrides))


def list_repo_configs(config_dir: str = REPO_CONFIG_DIR) -> list[str]:
    """Names of the primary configs (top-level ``*.yaml``) in ``config_dir``; sub-folders hold fragments."""
    if not os.path.isdir(config_dir):
        return []
    return sorted(name[: -len(".yaml")] for name in os.listdir(config_dir) if name.endswith(".yaml"))
