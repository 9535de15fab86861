"""What importing verl prints on a CPU machine, quieted for verl-spro's own tools (demo, sweep, bench, check, ...).

Those tools use verl as a library on the CPU by design, so two kinds of start-up noise say nothing to their users:

* a ``UserWarning`` per optional engine verl 0.9.1 and Megatron lack here (Apex, torchtitan, veomni, ...);
* verl's platform manager's "No supported accelerator detected ... Falling back to 'nvidia'" and "Platform 'nvidia'
  ... is registered but not available. This may be due to this ray actor being a CPU-only actor" (printed the
  first time anything asks verl for its device, e.g. on importing its FSDP engine; in the sweep, once per worker).

Training (``python -m verl_spro.main_ppo``) keeps the second: there it matters, when a GPU config meets a machine
without GPUs. A run on verl-spro's CPU backend never prints it (the backend sets the ``cpu`` platform first).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["PLATFORM_LOGGER", "quiet_verl_import_noise"]

PLATFORM_LOGGER = "verl.plugin.platform.platform_manager"
_CPU_ONLY_NOTICES = ("No supported accelerator detected", "Platform '%s' (%s) is registered but not available")


class _NoCpuOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CPU_ONLY_NOTICES)


_FILTER = _NoCpuOnlyNotice()


def quiet_verl_import_noise() -> None:
    """Ignore verl's optional-engine warnings and its CPU-only platform notice in this process (idempotent)."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(megatron|verl|transformer_engine)(\.|$)")
    logger = logging.getLogger(PLATFORM_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
