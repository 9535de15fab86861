"""argparse value types shared by the ``verl-spro`` subcommands (stdlib only: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable


def int_at_least(minimum: int, name: str) -> Callable[[str], int]:
    """An argparse ``type=`` that accepts integers >= ``minimum`` and names the option ``name`` in its error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse


def positive_int(name: str) -> Callable[[str], int]:
    """Integers >= 1 (counts, sizes)."""
    return int_at_least(1, name)


def int_in_range(minimum: int, maximum: int, name: str) -> Callable[[str], int]:
    """Integers in ``[minimum, maximum]`` (sizes with a sane ceiling: an absurd value fails at parse time)."""
    at_least = int_at_least(minimum, name)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{name} must be <= {maximum}, got {value}")
        return value

    return parse


def finite_float_above(minimum: float, name: str) -> Callable[[str], float]:
    """Finite floats strictly greater than ``minimum`` (``nan``, ``inf`` and ``minimum`` itself are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text!r}")
        if value <= minimum:
            raise argparse.ArgumentTypeError(f"{name} must be > {minimum:g}, got {text}")
        return value

    return parse


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def positive_threads(name: str) -> Callable[[str], int]:
    """An argparse type for a thread or process count: 1 .. the CPUs this process may use."""
    as_int = positive_int(name)

    def parse(text: str) -> int:
        value = as_int(text)
        if value > usable_cpus():
            raise argparse.ArgumentTypeError(f"{name} must be <= {usable_cpus()} (the CPUs available), got {value}")
        return value

    return parse
