"""Writing tables, text and other files atomically (tables as CSV or TSV by suffix).

A table is written to a temporary file beside its destination and moved into place with
``os.replace``, so a crash never leaves a half-written export where a complete one was. The
file gets the permissions ``open(path, "w")`` would give it, so a project folder shared by a
group of raters' accounts stays usable by all of them (see docs/ratings.md).

Tables are opened by raters in Excel or LibreOffice, which run a cell starting with ``=``, ``+``,
``-`` or ``@`` as a formula: such text cells (ids older projects may hold, comments, notes) are
written with a leading ``'`` (:func:`neutralised`), as OWASP advises against CSV injection;
numbers are written as they are.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO

import pandas as pd

from napari_deep_prl.errors import SHARING_DOCS, file_error


def separator_for(path: str | Path) -> str:
    """Tab for ``.tsv``/``.tab``/``.txt``, comma otherwise."""
    return "\t" if Path(path).suffix.lower() in (".tsv", ".tab", ".txt") else ","


#: How a text cell starts when a spreadsheet would run it as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_table(table: pd.DataFrame, path: str | Path, *, float_format: str = "%.6g",
                na_rep: str = "") -> Path:
    """Write ``table`` without its index, atomically (``na_rep="n/a"`` for BIDS derivatives),
    its text cells :func:`neutralised`."""
    return write_atomic(path, lambda fh: print_table(table, fh, sep=separator_for(path),
                                                     float_format=float_format, na_rep=na_rep))


def print_table(table: pd.DataFrame, file: TextIO, *, sep: str = "\t", float_format: str | None = "%.6g",
                na_rep: str = "") -> None:
    """Write ``table`` to an open text file (e.g. standard output) as :func:`write_table` does."""
    neutralised(table).to_csv(file, sep=sep, index=False, float_format=float_format, na_rep=na_rep)


def neutralised(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``'`` before every text cell and column name a spreadsheet would run
    as a formula (:data:`FORMULA_STARTS`); ``table`` itself when there is none."""
    def risky(value: object) -> bool:
        return isinstance(value, str) and value.startswith(FORMULA_STARTS)

    def safe(value: object) -> object:
        return "'" + value if risky(value) else value  # type: ignore[operator]

    safer = table
    for i, column in enumerate(table.columns):
        values = table.iloc[:, i]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
            continue
        if values.map(risky).any():
            safer = table.copy() if safer is table else safer
            safer.isetitem(i, values.map(safe))
    if any(map(risky, table.columns)):
        safer = table.copy() if safer is table else safer
        safer.columns = [safe(c) for c in table.columns]
    return safer


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    return write_atomic(path, lambda fh: fh.write(text))


def write_atomic(path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = False) -> Path:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then move it into place.

    Permissions are those ``open(path, "w")`` gives: a new file gets mode 0o666 less the umask
    (and, in a setgid folder, the folder's group), a replaced file keeps its mode. A folder this
    account may not write raises :class:`~napari_deep_prl.errors.InputError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fh = _create_beside(path, binary)
    except PermissionError as err:
        raise file_error(path, f"this account may not write there ({err.strerror}: {err.filename})",
                         f"Write elsewhere, or have the folder's owner make it group-writable "
                         f"({SHARING_DOCS}).") from err
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create_beside(path: Path, binary: bool) -> tuple[Path, IO[Any]]:
    """A new hidden file next to ``path``, created by ``open`` (``tempfile.mkstemp`` makes it
    0o600, which other raters' accounts could then neither read nor replace)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, open(tmp, "xb") if binary else open(tmp, "x", newline="")
        except FileExistsError:
            continue
