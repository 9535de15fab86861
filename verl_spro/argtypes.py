"""argparse value types shared by the ``verl-spro`` subcommands (stdlib only: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
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


def non_negative_int(name: str) -> Callable[[str], int]:
    """Integers >= 0."""
    return int_at_least(0, name)
