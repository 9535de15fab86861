"""Output files and folders that never lose a user's data: checked before the work, written atomically.

Shared by the ``verl-spro`` subcommands (``prepare-data``, ``bench``, ``demo``, ``sweep``, ``smoke``), one rule for
every command that writes into a folder (:func:`claim_out_dir`), checked before any work:

- an empty path (which would mean the current directory) is refused at parse time (:func:`out_path`), and so is a
  folder that is the file system root, the home directory, or the current directory or one above it;
- a folder holding an earlier run (any of the files the command writes) is refused unless the user says so
  (``--force``/``--fresh``, or ``--resume`` where a run can be continued);
- a lock (:class:`OutDirLock`, ``flock`` on ``OUT/.verl-spro.lock``, released by the kernel when the process ends,
  however it ends) refuses a second run into the same folder while the first is running;
- the folder is created and test-written (:func:`check_out_dir`).

Every file is written under a hidden temporary name beside its final path and renamed over it at the end
(:class:`AtomicFile`, :func:`atomic_write`), so a killed run leaves the previous file as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from verl_spro.processes import pid_alive

__all__ = [
    "LOCK_NAME",
    "AtomicFile",
    "OutDirLock",
    "OutputPathError",
    "add_out_arguments",
    "atomic_write",
    "check_out_dir",
    "claim_out_dir",
    "one_line",
    "out_path",
    "unsafe_out_dir",
]

#: The lock file of a run inside its output folder.
LOCK_NAME = ".verl-spro.lock"


class OutputPathError(Exception):
    """An output path that cannot be written (one line, naming the path)."""


def one_line(error: BaseException | str, with_type: bool = False) -> str:
    """``error``'s message on one line (whitespace collapsed): the one helper behind every one-line error.

    An exception without a message gives its type name; ``with_type`` prefixes the type name (``"KeyError: 'x'"``)
    for messages that do not say what went wrong by themselves. A ``str`` is only collapsed.
    """
    if isinstance(error, str):
        return " ".join(error.split())
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text}" if with_type else text


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
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


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
    return _directory_in_the_way(out, files)


def _earlier_run(out: Path, option: str, found: list[str], replace_flag: str, resume_flag: str | None) -> str:
    resume = f"continue it with {resume_flag}, " if resume_flag else ""
    return (
        f"{option} {out} holds an earlier run ({', '.join(found)}): {resume}replace it with {replace_flag}, or "
        f"choose another {option}"
    )


def _directory_in_the_way(out: Path, files: Sequence[str]) -> str | None:
    for name in files:
        if (out / name).is_dir():
            return f"--out {out}: {out / name} is a directory"
    return None


def out_path(option: str) -> Callable[[str], Path]:
    """An argparse ``type=`` for an output path: an empty (or blank) value, which would mean the current directory,
    is refused at parse time naming ``option``."""

    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(
                f"{option} is empty: give a path (an empty one would write into the current directory)"
            )
        return Path(text)

    return parse


def add_out_arguments(parser: argparse.ArgumentParser, default: Path, help: str, force_help: str = "") -> None:
    """``--out`` (an :func:`out_path`) and ``--force``, as every command that writes into a folder has them."""
    parser.add_argument("--out", type=out_path("--out"), default=default, help=help)
    parser.add_argument(
        "--force",
        action="store_true",
        help=force_help or "replace the results of an earlier run in --out (without it such an --out is refused)",
    )


def unsafe_out_dir(out: Path, option: str) -> str | None:
    """Why ``out`` may not be a run's own output folder (the root, the home directory, the current directory or a
    folder above it: a run writes and, with ``--force``/``--fresh``, replaces files there), or None."""
    where = out.resolve()
    cwd = Path.cwd().resolve()
    if where == Path(where.anchor):
        return f"{option} {out} is the file system root: give the run a folder of its own"
    if where == Path.home().resolve():
        return f"{option} {out} is the home directory: give the run a folder of its own"
    if where == cwd or where in cwd.parents:
        return f"{option} {out} is the current directory or a folder above it: give the run a folder of its own"
    return None


class OutDirLock:
    """An exclusive ``flock`` on ``OUT/.verl-spro.lock`` for the life of a run; the kernel drops it when the process
    ends, however it ends, so a killed run leaves no stale lock. The file names the holder (PID and command)."""

    def __init__(self, out: Path, option: str = "--out") -> None:
        path = out / LOCK_NAME
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputPathError(f"{option} {out}: cannot create the lock {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise OutputPathError(
                f"{option} {out}: another run is writing there ({' '.join(holder.split())}); wait for it to end or "
                f"choose another {option}"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"PID {os.getpid()}: {' '.join(sys.argv)}\n".encode(errors="replace"), 0)

    def release(self) -> None:
        """Drop the lock (idempotent); the lock file stays, empty of meaning once unlocked."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim_out_dir(
    out: Path,
    option: str = "--out",
    *,
    files: Sequence[str] = (),
    earlier: Sequence[str] = (),
    replace_flag: str = "--force",
    replace: bool = False,
    resume_flag: str | None = None,
) -> OutDirLock | str:
    """The one output-folder rule: the held lock of ``out``, or why the run may not write there (one line).

    Args:
        out: the output folder (created if missing, after the checks that need no folder).
        option: the option that named it, for the messages.
        files: names the run writes there; none may be a directory (see :func:`check_out_dir`).
        earlier: names whose presence means ``out`` holds an earlier run (the run's outputs); such an ``out`` is
            refused unless ``replace`` is true.
        replace_flag, replace: the option that allows replacing an earlier run, and whether it was given.
        resume_flag: the option that continues an earlier run, named in the refusal (when the command has one).
    """
    problem = unsafe_out_dir(out, option)
    if problem is not None:
        return problem
    lock = None
    try:
        if (out / LOCK_NAME).is_file():  # a running run is named as such, before its files count as an earlier run
            lock = OutDirLock(out, option)
        found = [name for name in earlier if (out / name).exists()] if not replace else []
        problem = (
            _directory_in_the_way(out, files)
            or (found and _earlier_run(out, option, found, replace_flag, resume_flag))
            or None
        )
        if problem is None:
            problem = check_out_dir(out, files)
        if problem is None and lock is None:
            lock = OutDirLock(out, option)
    except OutputPathError as exc:
        problem = str(exc)
    if problem is not None:
        if lock is not None:
            lock.release()
        return problem
    assert lock is not None
    return lock
