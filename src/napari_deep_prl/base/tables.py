"""Writing tables, text and other files atomically (tables as CSV or TSV by suffix).

A table is written to a temporary file beside its destination and moved into place with
``os.replace``, so a crash never leaves a half-written export where a complete one was. The
file gets the permissions ``open(path, "w")`` would give it, so a project folder shared by a
group of raters' accounts stays usable by all of them (see docs/ratings.md).

Tables are opened by raters in Excel or LibreOffice, which run a cell starting with ``=``, ``+``,
``-`` or ``@`` as a formula: such text cells (ids older projects may hold, comments, notes) are
written with a leading ``'`` (:func:`neutralised`), as OWASP advises against CSV injection;
numbers are written as they are.

Every output goes through :func:`write_atomic`: on a full disk, past a file-size limit or without
permission the temporary file is removed and an :class:`~napari_deep_prl.base.errors.OutputError` says
what is wrong, and the temporary files of killed runs are cleaned up by the next write.
Commands check their output paths up front with :func:`check_output`, and results of long work
are kept elsewhere when their output cannot be written (:func:`write_or_rescue`).
"""

from __future__ import annotations

import errno
import glob
import gzip
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, TypeVar

from napari_deep_prl.base.errors import OutputError, nearest_existing, write_error

if TYPE_CHECKING:
    import nibabel as nib
    import pandas as pd

T = TypeVar("T")


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
    import pandas as pd

    def risky(value: object) -> bool:
        return isinstance(value, str) and value.startswith(FORMULA_STARTS)

    def safe(value: object) -> object:
        return "'" + value if risky(value) else value  # type: ignore[operator]

    safer = table
    for i in range(table.shape[1]):
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


def write_text(path: str | Path, text: str, *, exclusive: bool = False) -> Path:
    """Write a text file atomically (``exclusive``: only if there is none, as :func:`write_atomic`)."""
    return write_atomic(path, lambda fh: fh.write(text), exclusive=exclusive)


def write_atomic(path: str | Path, write: Callable[[IO[Any]], object], *, binary: bool = False,
                 exclusive: bool = False) -> Path:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then move it into place.

    ``exclusive``: put it in place only if ``path`` does not exist yet, else raise
    :class:`FileExistsError` (the check and the move are one step, a hard link, so of processes
    writing at once exactly one succeeds: how concurrent cluster tasks agree on one file).

    Permissions are those ``open(path, "w")`` gives: a new file gets mode 0o666 less the umask
    (and, in a setgid folder, the folder's group), a replaced file keeps its mode. When the file
    cannot be written (no permission, a full disk, a file-size limit, a folder in the way) the
    temporary file is removed and :class:`~napari_deep_prl.base.errors.OutputError` says why, whatever
    the library inside ``write`` made of the operating system's error. Temporary files that
    killed processes left beside ``path`` are removed first.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        tmp, fh = _create_beside(path, binary)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            try:
                os.chmod(tmp, os.stat(path).st_mode & 0o777)
            except FileNotFoundError:
                pass
            os.replace(tmp, path)
    except BaseException as err:
        cause = _write_failure(err)
        error = None if cause is None else write_error(path, cause)  # while tmp still fills the disk
        tmp.unlink(missing_ok=True)
        if error is None:
            raise
        raise error from err
    return path


def check_output(path: str | Path | None, *, folder: bool = False) -> Path | None:
    """Refuse (:class:`~napari_deep_prl.base.errors.OutputError`) an output path that cannot be written,
    before any work: a file path naming a folder (or a folder path naming a file), a file where a
    folder would have to be made, a folder this account may not write or on a read-only disk.
    Creates nothing; call it for every output a command will write (``None``: an output not
    asked for), as soon as it is known."""
    if path is None:
        return None
    path = Path(path)
    if not folder and path.is_dir():
        raise write_error(path, IsADirectoryError(errno.EISDIR, "is a folder"))
    if folder and os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{path}: cannot be written: it is a file, not a folder. Give a folder.")
    base = nearest_existing(path if folder else path.parent)
    if not base.is_dir():
        raise write_error(path, NotADirectoryError(errno.ENOTDIR, "not a folder"))
    if not os.access(base, os.W_OK | os.X_OK):
        raise write_error(path, PermissionError(errno.EACCES, "permission denied"))
    return path


def write_nifti(image: nib.Nifti1Image, path: str | Path) -> Path:
    """Save a NIfTI image atomically (as :func:`write_atomic`), gzip-compressed for a ``.gz``
    name as nibabel does (level 1) but without a timestamp, so equal images give equal files."""
    def write(fh: IO[bytes]) -> None:
        if not str(path).endswith(".gz"):
            image.to_stream(fh)
            return
        # the name in the gzip header is the final one, not the temporary file's
        with gzip.GzipFile(Path(path).name, fileobj=fh, mode="wb", compresslevel=1, mtime=0) as compressed:
            image.to_stream(compressed)

    return write_atomic(path, write, binary=True)


def write_or_rescue(write: Callable[[Path], T], folder: str | Path, what: str) -> T:
    """``write(folder)``, for results of long work: when an output cannot be written there, call
    ``write`` again on a new folder in the system's temporary folder and raise an
    :class:`~napari_deep_prl.base.errors.OutputError` saying where ``what`` was kept."""
    try:
        return write(Path(folder))
    except OutputError as err:
        rescue = Path(tempfile.mkdtemp(prefix="deep-prl-rescue-"))
        try:
            write(rescue)
        except OutputError as again:
            shutil.rmtree(rescue, ignore_errors=True)
            raise OutputError(f"{err} Keeping {what} in {rescue} failed too ({again}), so it is "
                              "lost.") from err
        raise OutputError(f"{err} {what[:1].upper() + what[1:]} was kept in {rescue} instead: "
                          "move it from there.") from err


#: errno values that mean a file could not be written (not a bug of the writer).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO,
                           errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR})


def _write_failure(err: BaseException) -> OSError | None:
    """The operating system's write error behind ``err`` (libraries such as torch re-raise it
    as another exception, keeping it as the context), or ``None``."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _WRITE_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _create_beside(path: Path, binary: bool) -> tuple[Path, IO[Any]]:
    """A new hidden file next to ``path``, created by ``open`` (``tempfile.mkstemp`` makes it
    0o600, which other raters' accounts could then neither read nor replace); its name carries
    this host and process, so that :func:`_remove_stale` knows when its writer is gone."""
    while True:
        tmp = path.with_name(f".{path.name}.{HOST}-{os.getpid()}-{secrets.token_hex(6)}.tmp")
        try:
            return tmp, open(tmp, "xb") if binary else open(tmp, "x", newline="")
        except FileExistsError:
            continue


#: This machine's name as it appears in temporary file names (a shared folder may be written
#: from several machines: only this one's processes can be checked).
HOST = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()) or "host"


def _remove_stale(path: Path) -> None:
    """Remove the temporary files of ``path`` left by killed processes of this machine (those
    of running processes, other machines or older versions stay)."""
    if os.name != "posix":
        return
    prefix = f".{path.name}."
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        host, _, pid = tmp.name[len(prefix):-len(".tmp")].rpartition("-")[0].rpartition("-")
        if host == HOST and pid.isdigit() and not process_running(int(pid)):
            tmp.unlink(missing_ok=True)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (its temporary files are then in use)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it does, under another account
        pass
    return True
