"""vLLM's ``vllm.general_plugins`` entry point: vLLM calls :func:`register` in each of its processes.

It does nothing unless the CPU backend is in effect, i.e. ``verl_spro.cpu_backend`` is among the modules of
``VERL_USE_EXTERNAL_MODULES`` (``verl-spro smoke`` and the launchers' ``SPRO_CPU_BACKEND=1`` set it for main_ppo,
whose Ray workers and vLLM's spawned processes inherit it): a GPU user who installs verl-spro gets vLLM untouched.
Where it is in effect it installs :mod:`verl_spro.cpu_backend.vllm_fixes`.
"""

from __future__ import annotations

import os

CPU_BACKEND = "verl_spro.cpu_backend"


def cpu_backend_in_effect() -> bool:
    """Whether this process runs with the CPU backend (named in ``VERL_USE_EXTERNAL_MODULES``)."""
    return CPU_BACKEND in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",")


def register() -> None:
    """Install the CPU backend's vLLM fixes when the CPU backend is in effect; otherwise nothing."""
    if cpu_backend_in_effect():
        from verl_spro.cpu_backend.vllm_fixes import install

        install()
