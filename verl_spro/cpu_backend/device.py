"""The ``torch.cuda``-shaped device module verl calls through ``get_torch_device()``, for the CPU.

verl calls ``get_torch_device().empty_cache()``, ``.synchronize()``, ``.mem_get_info()``, ``.get_rng_state()`` and a
few more unconditionally; ``torch.cpu`` lacks most of them. Memory queries report the process' view of host memory
(zeros where there is no device allocator), streams are ``torch.cpu``'s no-op streams.
"""

from __future__ import annotations

import os
from typing import Any

import torch

Event = torch.cpu.Event
Stream = torch.cpu.Stream
current_stream = torch.cpu.current_stream
stream = torch.cpu.stream


def is_available() -> bool:
    """The CPU is always there."""
    return True


def device_count() -> int:
    """One logical device: the host."""
    return 1


def current_device() -> torch.device:
    """``torch.device("cpu")``: verl passes it to ``.to()`` and ``torch.device()``."""
    return torch.device("cpu")


def set_device(device: Any) -> None:
    """No-op: there is one host device."""


def synchronize(device: Any = None) -> None:
    """No-op: CPU kernels run synchronously."""


def empty_cache() -> None:
    """No-op: no caching allocator on the CPU."""


def ipc_collect() -> None:
    """No-op: no CUDA IPC on the CPU."""


def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
    """No-op: host memory is not partitioned."""


def get_device_name(device: Any = None) -> str:
    """``"CPU"``: verl's FLOPs table matches names by substring, so this must be a string."""
    return "CPU"


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """(free, total) bytes of host memory."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


def memory_allocated(device: Any = None) -> int:
    """0: there is no device allocator to ask."""
    return 0


memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated


def reset_peak_memory_stats(device: Any = None) -> None:
    """No-op."""


def manual_seed(seed: int) -> None:
    """Seeds torch's CPU generator (the only one)."""
    torch.manual_seed(seed)


manual_seed_all = manual_seed
get_rng_state = torch.get_rng_state
set_rng_state = torch.set_rng_state
