"""What a starting ``main_ppo`` is doing, read from its log: ``verl-spro smoke``'s lines before the first step.

Ray and verl's workers take minutes to start on a small CPU machine, and main_ppo's own output (about 1000 lines of
config) goes to the run's log file, not the terminal. :class:`StartupPhases` follows that file and turns verl 0.9.1's
known start-up lines into one short line each, plus an elapsed-time line every :data:`QUIET_S` seconds without news.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["PHASES", "QUIET_S", "StartupPhases"]

#: (a substring of a main_ppo log line, what it means), in the order verl prints them.
PHASES: tuple[tuple[str, str], ...] = (
    ("All configuration checks passed", "config valid; starting Ray"),
    ("Started a local Ray instance", "Ray up; verl's task runner starting"),
    ("dataset len:", "data loaded; starting the workers"),
    ("create worker group", "worker group created; building the actor and reference models"),
    ("actor and ref model engine initialized", "actor and reference models built; starting the rollout"),
    ("LLMServerManager:", "rollout server up; running the first step"),
)
QUIET_S = 30.0


class StartupPhases:
    """Reads ``log_path`` as it grows; :meth:`poll` returns the lines to print since the last call."""

    def __init__(self, log_path: Path, clock: Callable[[], float] = time.monotonic, quiet_s: float = QUIET_S) -> None:
        self.log_path = log_path
        self.clock = clock
        self.quiet_s = quiet_s
        self.start = self.last_line = clock()
        try:  # a resumed run appends to the log: only what comes from now on counts
            self.offset = log_path.stat().st_size
        except OSError:
            self.offset = 0
        self.next_phase = 0
        self.pending = b""
        self.current = "starting main_ppo"

    def _new_lines(self) -> list[str]:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()  # a line still being written
        return [line.decode(errors="replace") for line in lines]

    def poll(self) -> list[str]:
        """Lines to print: one per start-up phase reached, or an elapsed-time line after ``quiet_s`` without one."""
        out = []
        for line in self._new_lines():
            for index in range(self.next_phase, len(PHASES)):
                marker, meaning = PHASES[index]
                if marker in line:
                    self.next_phase, self.current = index + 1, meaning
                    out.append(f"{meaning} ({self.clock() - self.start:.0f} s)")
                    break
        now = self.clock()
        if out:
            self.last_line = now
        elif now - self.last_line >= self.quiet_s:
            out.append(f"still at: {self.current.split('; ')[-1]} ({now - self.start:.0f} s)")
            self.last_line = now
        return out
