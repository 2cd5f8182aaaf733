"""Errors a user can act on.

Every exception raised for bad input derives from :class:`DeepPRLError` and carries a message
that names *what* is wrong, *which file* (or row, or id) and *what to do*. The CLI prints the
message on one line and exits non-zero; the napari widgets show it as a notification. Anything
else escaping the package is a bug.
"""

from __future__ import annotations

from pathlib import Path


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
