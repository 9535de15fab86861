"""Whether a process is alive: the one check behind stale-lock cleanup and the stopping of a run's processes."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and has not exited: a zombie (exited, not yet reaped by its parent) still
    answers ``kill -0`` but is dead. A process of another user (``kill -0`` refused) counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False  # gone between the two checks
    except (OSError, IndexError):
        return True  # no /proc here (not Linux): kill -0 answered
