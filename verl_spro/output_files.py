"""Output files and folders that never lose a user's data: checked before the work, written atomically.

Shared by the ``verl-spro`` subcommands (``prepare-data``, ``bench``, ``demo``, ``sweep``, ``smoke``): an output
folder is created and test-written before any work starts (:func:`check_out_dir`), and every file is written under
a hidden temporary name beside its final path and renamed over it at the end (:class:`AtomicFile`,
:func:`atomic_write`), so a killed run leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["AtomicFile", "OutputPathError", "atomic_write", "check_out_dir", "one_line"]


class OutputPathError(Exception):
    """An output path that cannot be written (one line, naming the path)."""


def one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class AtomicFile:
    """A file written under a hidden temporary name beside ``path`` and renamed over it by :meth:`commit`.

    A run that dies before ``commit`` leaves ``path`` as it was. The temporary file is created in the constructor,
    so an unwritable location fails before any input is read. A symlinked ``path`` keeps its link: the file it
    points to is replaced. Temporary files left by killed runs on this host (``.NAME.HOST.PID.*.tmp`` whose
    process is gone) are removed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.target = os.path.realpath(path)
        directory, name = os.path.split(self.target)
        prefix = f".{name}.{_HOST}."
        try:
            os.makedirs(directory, exist_ok=True)
            _remove_stale_temps(directory, prefix)
            fd, self.temp = tempfile.mkstemp(dir=directory, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp")
        except (FileExistsError, NotADirectoryError):  # a path component is a file
            raise OutputPathError(f"cannot write {path}: a component of {directory} is not a directory") from None
        except OSError as exc:
            raise OutputPathError(f"cannot write {path}: {exc.strerror or one_line(exc)}") from None
        try:
            mode = os.stat(self.target).st_mode & 0o777 if os.path.exists(self.target) else 0o666 & ~_umask()
            os.fchmod(fd, mode)  # mkstemp makes 0600; keep the previous file's mode, or the usual one
        finally:
            os.close(fd)
        self.committed = False

    def commit(self) -> None:
        """Rename the temporary file over ``path`` (atomic within a file system)."""
        os.replace(self.temp, self.target)
        self.committed = True

    def discard(self) -> None:
        """Remove the temporary file unless committed (idempotent)."""
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)
            self.committed = True


_HOST = socket.gethostname().split(".")[0] or "host"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temps(directory: str, prefix: str) -> None:
    for name in os.listdir(directory):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``: a run that dies or raises
    half way leaves the previous file whole (and no temporary file behind, unless killed)."""
    output = AtomicFile(str(path))
    try:
        write(Path(output.temp))
        output.commit()
    finally:
        output.discard()


def check_out_dir(out: Path, files: Sequence[str] = ()) -> str | None:
    """Why ``out`` cannot take the run's outputs, in one line naming ``--out``, or None (``out`` is then created).

    Args:
        out: the ``--out`` folder; created if missing, then a file is test-written in it.
        files: names of the files the run will write there; none of them may be a directory.
    """
    if out.exists() and not out.is_dir():
        return f"--out {out}: exists and is not a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out}: cannot create the directory: {exc.strerror or exc}"
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        return f"--out {out} is not writable: {exc.strerror or exc}"
    for name in files:
        if (out / name).is_dir():
            return f"--out {out}: {out / name} is a directory"
    return None
