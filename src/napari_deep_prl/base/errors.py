"""Errors a user can act on.

Every exception raised for bad input derives from :class:`DeepPRLError` and carries a message
that names *what* is wrong, *which file* (or row, or id) and *what to do*. The CLI prints the
message on one line and exits non-zero; the napari widgets show it as a notification. Anything
else escaping the package is a bug.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

#: Where the documentation explains a project folder shared by several accounts.
SHARING_DOCS = "docs/ratings.md, 'Sharing a project between raters' accounts'"


class DeepPRLError(Exception):
    """Base class of the errors a user can fix."""


class InputError(DeepPRLError, ValueError):
    """An input file, manifest or argument is unusable."""


class CheckpointError(DeepPRLError):
    """A model checkpoint is missing, foreign or incompatible."""


class StoreError(DeepPRLError):
    """The rating database cannot be used (corrupt, foreign, locked for too long)."""


class OutputError(InputError):
    """An output cannot be written where it was asked for (a folder in the way, no permission, a
    full disk, a file-size limit); nothing partial is left under its name."""


class InputWarning(UserWarning):
    """Input was usable after a repair (e.g. NaN replaced); the message says what changed."""


def describe(err: BaseException) -> str:
    """An exception as one short line (its type and first line), for messages that quote a library's error."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def file_error(path: str | Path, problem: str, remedy: str) -> InputError:
    """Build the standard message: ``<file>: <problem>. <remedy>``."""
    return InputError(f"{path}: {problem}. {remedy}")


def permissions(path: str | Path) -> str:
    """``mode 0644, owner ana, group raters``: what a user needs to see to fix access."""
    try:
        info = os.stat(path)
    except OSError as err:  # e.g. a folder above it that this account may not enter
        return f"not accessible: {err.strerror}"
    try:
        owner, group = Path(path).owner(), Path(path).group()
    except (KeyError, NotImplementedError):  # an id without a name; no such names on Windows
        owner, group = str(info.st_uid), str(info.st_gid)
    return f"mode {stat.S_IMODE(info.st_mode):04o}, owner {owner}, group {group}"


def access_error(paths: Sequence[str | Path], need: str, project: str | Path) -> StoreError:
    """A project file or folder this account may not use (``need``: "read", "write").

    The usual cause is a project folder shared by raters' accounts without a common group or
    without ``umask 002``; the message says how its owner fixes that.
    """
    what = "; ".join(f"{p} ({permissions(p)})" for p in paths)
    return StoreError(
        f"{what}: this account may not {need} {'it' if len(paths) == 1 else 'them'}, so the "
        f"project cannot be used. If raters share the project, its owner (or an administrator) "
        f"runs `chgrp -R GROUP {project} && chmod -R g+rwX {project} && find {project} -type d "
        f"-exec chmod g+s {{}} +` with the raters' group, and every rater works with `umask 002` "
        f"({SHARING_DOCS}); otherwise open a copy of the project you own.")


#: Free space (bytes) below which a failed write is blamed on a full disk.
LOW_SPACE = 1 << 20


def write_error(path: str | Path, err: OSError) -> OutputError:
    """What really stopped writing ``path`` (``err``'s errno, the disk, the limits), and what to do."""
    path = Path(path)
    folder = nearest_existing(path.parent)
    problem = disk_problem(folder, err.errno)
    if problem is not None:
        what, remedy = problem
    elif err.errno in (errno.EACCES, errno.EPERM):
        what, remedy = (f"this account may not write in {folder} ({permissions(folder)})",
                        f"Write elsewhere, or have the folder's owner make it group-writable "
                        f"({SHARING_DOCS}).")
    elif err.errno == errno.EISDIR or path.is_dir():
        what, remedy = "it is a folder", f"Give a file name inside it (e.g. {path / 'NAME'}) instead."
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        what, remedy = f"{blocking_file(path)} is a file, not a folder", "Choose a path in a folder."
    else:
        what, remedy = err.strerror or str(err), "Check the path and the disk, then try again."
    return OutputError(f"{path}: cannot be written: {what}. {remedy}")


def disk_problem(folder: str | Path, code: int | None = None) -> tuple[str, str] | None:
    """``(what, remedy)`` when the file system is what stops writing in ``folder``: read-only,
    full, over quota or past the process's file-size limit, by the errno ``code`` or, without one
    (SQLite tells no errno), by looking; ``None`` when none of these is the cause."""
    folder = Path(folder)
    if code == errno.EROFS or on_read_only_fs(folder):
        return (f"{folder} is on a read-only file system",
                "Write to a writable disk (or have it mounted read-write).")
    if code == errno.EDQUOT:
        return (f"this account's disk quota on {folder} is used up",
                "Free some of your space or write elsewhere, then try again.")
    limit = _file_size_limit()
    if code == errno.EFBIG:
        what = (f"the file reached this process's file-size limit of {_size(limit)} (`ulimit -f`)"
                if limit is not None else "the file is larger than the file system allows")
        return what, "Raise the limit (`ulimit -f unlimited`) or write elsewhere, then try again."
    free = _free_space(folder)
    if code == errno.ENOSPC or (code is None and free is not None and free < LOW_SPACE):
        left = f" ({_size(free)} free)" if free is not None else ""
        return (f"no space left on the disk holding {folder}{left}",
                "Free space on that disk or write elsewhere, then try again.")
    if code is None and limit is not None:
        return (f"this process may not write files larger than {_size(limit)}: a file-size limit "
                "is set (`ulimit -f`)", "Raise the limit (`ulimit -f unlimited`) and try again.")
    return None


def nearest_existing(path: str | Path) -> Path:
    """``path`` or its nearest ancestor that exists (where new folders for it would be made)."""
    path = Path(path)
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def blocking_file(path: str | Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists and is not a folder (it stops a folder from
    being made there); ``None`` when there is none."""
    for parent in Path(path).parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def on_read_only_fs(folder: str | Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return False


def _free_space(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _file_size_limit() -> int | None:
    """The soft RLIMIT_FSIZE in bytes, ``None`` when unlimited (or on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
