"""The ``/dev/shm`` files a run's processes leave behind when they die before cleaning up, and only those.

vLLM's shared-memory queues (``psm_*``: every ``--rollout vllm`` run here left two), verl's weight-transfer
buffer (``verl_weights_*``) and Python's named semaphores (``sem.*``) outlive a process killed by a signal. Other
users' runs share ``/dev/shm``, so nothing is removed by name or age: :class:`ShmLeftovers` records the entries
the run's own processes hold open or mapped (read from ``/proc/PID/maps`` and ``/proc/PID/fd`` while they
live) and, once they are gone, removes those of them that did not exist when the run started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SHM = Path("/dev/shm")

__all__ = ["SHM", "ShmLeftovers", "shm_paths_of"]


def shm_paths_of(pid: int, root: Path = SHM) -> set[str]:
    """Names of the entries directly under ``root`` that process ``pid`` has mapped or open (empty if it is gone)."""
    prefix = f"{root}/"
    paths: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                start = line.find(prefix)
                if start >= 0:
                    paths.add(line[start:].rstrip("\n").removesuffix(" (deleted)"))
    except OSError:
        pass
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                paths.add(target.removesuffix(" (deleted)"))
    except OSError:
        pass
    return {path[len(prefix) :] for path in paths if "/" not in path[len(prefix) :]}


class ShmLeftovers:
    """Record a run's ``/dev/shm`` entries (:meth:`scan`) and remove the new ones it left (:meth:`remove`)."""

    def __init__(self, root: Path = SHM) -> None:
        self.root = root
        try:
            self.before = set(os.listdir(root))
        except OSError:  # no /dev/shm on this system: nothing to track
            self.before = None
        self.seen: set[str] = set()

    def scan(self, pids: Iterable[int]) -> None:
        """Add the entries created since the start that any of ``pids`` has open or mapped now."""
        if self.before is None:
            return
        for pid in pids:
            self.seen |= shm_paths_of(pid, self.root) - self.before

    def remove(self) -> list[str]:
        """Delete the recorded entries that still exist (call once the run's processes are gone); returns them."""
        removed = []
        for name in sorted(self.seen):
            try:
                (self.root / name).unlink()
            except FileNotFoundError:
                continue
            except OSError:  # not ours to delete after all (permissions): leave it
                continue
            removed.append(name)
        return removed
