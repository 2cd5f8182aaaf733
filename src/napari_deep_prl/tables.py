"""Writing tables, text and other files atomically (tables as CSV or TSV by suffix).

A table is written to a temporary file beside its destination and moved into place with
``os.replace``, so a crash never leaves a half-written export where a complete one was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pandas as pd


def separator_for(path: str | Path) -> str:
    """Tab for ``.tsv``/``.tab``/``.txt``, comma otherwise."""
    return "\t" if Path(path).suffix.lower() in (".tsv", ".tab", ".txt") else ","


def write_table(table: pd.DataFrame, path: str | Path, *, float_format: str = "%.6g",
                na_rep: str = "") -> Path:
    """Write ``table`` without its index, atomically (``na_rep="n/a"`` for BIDS derivatives)."""
    return write_atomic(path, lambda fh: table.to_csv(fh, sep=separator_for(path), index=False,
                                                      float_format=float_format, na_rep=na_rep))


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    return write_atomic(path, lambda fh: fh.write(text))


def write_atomic(path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = False) -> Path:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
