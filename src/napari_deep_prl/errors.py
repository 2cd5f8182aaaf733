"""Errors a user can act on.

Every exception raised for bad input derives from :class:`DeepPRLError` and carries a message
that names *what* is wrong, *which file* (or row, or id) and *what to do*. The CLI prints the
message on one line and exits non-zero; the napari widgets show it as a notification. Anything
else escaping the package is a bug.
"""

from __future__ import annotations

import os
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


class InputWarning(UserWarning):
    """Input was usable after a repair (e.g. NaN replaced); the message says what changed."""


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
