"""The rating store's SQLite engine: one file, checked before it is opened, read without
writing, and its errors told for what they are.

* **Durable before return.** WAL journal with ``synchronous=FULL``: a commit is fsynced to the
  write-ahead log before a write returns, so a kill or power cut after it never loses a label.
* **Several writers.** Each write is one ``BEGIN IMMEDIATE`` transaction; a busy database is
  waited for (SQLite's busy timeout) and the whole transaction retried (:class:`.engine.Engine`).
* **Never damage a file we do not own.** A file this account may not write, a full or read-only
  disk, a file-size limit, a foreign or corrupt file and a schema from a newer version are each
  named as such; a refused file is inspected by a reader that writes none of its files (not even
  ``-wal`` and ``-shm``), so it stays byte-identical.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from napari_deep_prl.base.errors import (
    StoreError,
    access_error,
    disk_problem,
    on_read_only_fs,
    write_error,
)
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.engine import Connection, Engine

_SQLITE_HEADER = b"SQLite format 3\x00"


class SQLiteEngine(Engine):
    """A rating store in one SQLite file (the embedded default)."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        super().__init__(str(path), readonly)
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, path: Path, *, create: bool, readonly: bool,
             busy_timeout_s: float) -> SQLiteEngine:
        """Inspect the file (see :func:`inspect`), then connect, back up an older schema and
        migrate it; ``readonly`` reads a snapshot taken now, in memory (an older schema is
        upgraded there), so a file this account may not write can still be read."""
        if not readonly:
            check_access(path)
        fresh = check_header(path, create)
        if readonly:
            version, conn = inspect(path, snapshot=True)
        else:
            version = 0 if fresh else inspect(path, adopt_empty=create)[0]
            conn = connect(path, fresh, busy_timeout_s)
        engine = cls(path, conn, False)
        try:
            engine._prepare(version, readonly)
        except BaseException:
            conn.close()
            raise
        engine.readonly = readonly
        return engine

    def _prepare(self, version: int, readonly: bool) -> None:
        conn = self.conn
        if not readonly:
            backup_path = self.path.with_name(f"{self.path.name}.v{version}.bak")
            if 0 < version < schema.SCHEMA_VERSION and not backup_path.exists():
                backup_path.touch()
                backup = sqlite3.connect(backup_path)
                conn.backup(backup)
                backup.close()
            self.read(lambda c: c.execute("PRAGMA journal_mode=WAL").fetchone())
            conn.execute("PRAGMA synchronous=FULL")
        if version < schema.SCHEMA_VERSION:
            self.write(self.migrate)
        conn.execute("PRAGMA foreign_keys=ON")
        if readonly:
            conn.execute("PRAGMA query_only=ON")

    def migrate(self, conn: Connection) -> None:
        """Create or upgrade the schema; re-read the version under the write lock."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")
            for statement in schema.SCHEMA_V1:
                conn.execute(statement)
            version = 1
        for step in range(version, schema.SCHEMA_VERSION):
            for statement in schema.MIGRATIONS[step]:
                conn.execute(statement)
        if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
            raise StoreError(f"{self.path}: the database has rows pointing at missing raters "
                             "or lesions; migration stopped and nothing was changed. Restore "
                             "a backup or report the file.")
        conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION}")

    def connection(self) -> sqlite3.Connection:
        return self.conn

    def begin(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def rollback(self, conn: Connection) -> None:
        if self.conn.in_transaction:
            conn.execute("ROLLBACK")

    def is_busy(self, err: BaseException) -> bool:
        text = str(err).lower()
        return isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text)

    def failure(self, err: BaseException, outcome: str) -> StoreError:
        return failure(self.path, err, outcome)

    def integrity_check(self) -> str:
        """SQLite's full ``integrity_check`` result."""
        return self.read(lambda conn: conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def check_access(path: Path) -> None:
    """Refuse a database this account may not write, before SQLite fails on it cryptically.

    SQLite writes the file and its ``-wal`` and ``-shm`` companions, and creates those in the
    folder; in a project shared by raters' accounts all of them must be group-writable. A
    read-only file system is told as such.
    """
    folder = path.parent
    if not os.path.isdir(folder):
        return  # a missing folder is reported as a missing database
    if on_read_only_fs(folder):
        raise StoreError(f"{path}: on a read-only file system, so nothing can be written to it. "
                         "Copy the project to a writable disk to rate; exports and agreement read "
                         "it as it is.")
    blocked = _blocked(path, "write")
    if blocked:
        raise access_error(blocked, "write", folder)


def _blocked(path: Path, need: str) -> list[Path]:
    """The database's folder and files (``-wal``, ``-shm``) this account may not use as ``need``
    ("read", or "write": read and write)."""
    writing = need == "write"
    companions = (path, _companion(path, "-wal"), _companion(path, "-shm"))
    mode = os.R_OK | os.W_OK if writing else os.R_OK
    blocked = [p for p in companions if os.path.exists(p) and not os.access(p, mode)]
    if not os.access(path.parent, os.W_OK | os.X_OK if writing else os.X_OK):
        blocked.insert(0, path.parent)
    return blocked


def _companion(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def check_header(path: Path, create: bool) -> bool:
    """Refuse a missing (unless ``create``) or non-SQLite file; ``True`` when it is new."""
    if not path.exists() or path.stat().st_size == 0:
        if create:
            return True
        raise StoreError(f"{path}: no rating database here. Create the project with "
                         "`deep-prl project init` or check the path.")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except PermissionError:
        raise access_error([path], "read", path.parent) from None
    if header != _SQLITE_HEADER:
        raise StoreError(f"{path}: not a rating database (the file is corrupt or of another "
                         "kind); it was left untouched. Restore it from a backup or move it "
                         "aside.")
    return False


def connect(path: Path, fresh: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """The read-write connection, once the file has been inspected (``fresh``: make it)."""
    try:
        if fresh:  # created as open() would: SQLite makes it 0o644, never group-writable
            path.touch()
        return sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
    except OSError as err:
        raise write_error(path, err) from err
    except sqlite3.Error as err:
        raise failure(path, err, "nothing was changed") from err


#: Inspections of a database whose file changed while it was read (a writer's checkpoint).
_INSPECTIONS = 5


def inspect(path: Path, *, adopt_empty: bool = False,
             snapshot: bool = False) -> tuple[int, sqlite3.Connection | None]:
    """Verify the database (:func:`_verify`) by a reader that writes none of its files
    (:func:`_reader`); return its schema version and, with ``snapshot``, a copy in memory.

    The main file alone is read when no log is pending; a checkpoint by another process can
    change it meanwhile, so a refusal (or a snapshot) is looked at again when it did. A reader
    the ``-shm`` refused is replaced by one of a private copy.
    """
    copy = False
    for attempt in range(1, _INSPECTIONS + 1):
        last = attempt == _INSPECTIONS
        before = _file_state(path)
        try:
            with _reader(path, copy) as conn:
                version = _verify(conn, path, adopt_empty)
                memory = _in_memory(conn) if snapshot else None
        except StoreError:
            if last or _file_state(path) == before:
                raise
            continue
        except sqlite3.Error as err:
            if last or _result_code(err) in (_CORRUPT, _NOTADB):
                raise failure(path, err, "it was left untouched", "read") from err
            copy = True
            continue
        if last or not snapshot or _file_state(path) == before:
            return version, memory
        memory.close()
    raise AssertionError("unreachable")


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What changes when the main file is written (a checkpoint): inode, size, mtime."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


@contextmanager
def _reader(path: Path, copy: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection that reads the database and writes none of its files: the main file alone
    (``immutable``) when no write-ahead log is pending, else the file and its log through a
    read-only ``-shm``; without a ``-shm`` (or with ``copy``) a private copy of file and log."""
    wal, shm = _companion(path, "-wal"), _companion(path, "-shm")
    pending = os.path.exists(wal) and os.path.getsize(wal) > 0
    with ExitStack() as stack:
        if pending and (copy or not shm.exists()):
            folder = Path(stack.enter_context(TemporaryDirectory(prefix="deep-prl-inspect-")))
            conn = sqlite3.connect(_private_copy(path, folder), check_same_thread=False)
        else:
            mode = "mode=ro&readonly_shm=1" if pending else "immutable=1"
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True,
                                   check_same_thread=False)
        stack.callback(conn.close)
        yield conn


def _private_copy(path: Path, folder: Path) -> Path:
    """The database and its write-ahead log copied into ``folder`` (only read where they are)."""
    for source in (path, _companion(path, "-wal")):
        try:
            with open(source, "rb") as original:
                data = original.read()
        except PermissionError:
            raise access_error([source], "read", path.parent) from None
        except OSError as err:
            raise StoreError(f"{source}: cannot be read ({err.strerror}); it was left untouched. "
                             "Check the disk.") from err
        try:
            (folder / source.name).write_bytes(data)
        except OSError as err:
            raise write_error(folder / source.name, err) from err
    return folder / path.name


def _in_memory(conn: sqlite3.Connection) -> sqlite3.Connection:
    """A copy of the database in memory (what a read-only store reads)."""
    memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.backup(memory)
    return memory


def _verify(conn: sqlite3.Connection, path: Path, adopt_empty: bool) -> int:
    """Check ownership, version and integrity; return the schema version. An empty SQLite file
    (made by an interrupted creation) is adopted with ``adopt_empty``, as version 0."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    n_objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        detail = " ".join(check.split())[:200]
        raise StoreError(f"{path}: the rating database is corrupt ({detail}); it was left "
                         "untouched. Restore it from a backup.")
    if app_id != schema.APPLICATION_ID and not (adopt_empty and app_id == 0 and n_objects == 0):
        raise StoreError(f"{path}: this SQLite file is not a napari-deep-prl rating database; "
                         "it was left untouched. Point to the project's ratings.sqlite.")
    if version > schema.SCHEMA_VERSION:
        raise StoreError(f"{path}: written by a newer napari-deep-prl (schema {version}, this "
                         f"version reads up to {schema.SCHEMA_VERSION}); it was left untouched. "
                         "Upgrade the package.")
    return version


#: SQLite's primary result codes (sqlite3.h) that tell what stopped it.
_PERM, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 8, 10, 11, 13, 14, 26
#: The same told by SQLite's messages (the exceptions of Python 3.10 carry no code).
_CODES_BY_MESSAGE = {"access permission denied": _PERM, "readonly database": _READONLY,
                     "disk I/O error": _IOERR, "malformed": _CORRUPT, "disk is full": _FULL,
                     "unable to open database file": _CANTOPEN, "not a database": _NOTADB}
#: What each code says when neither the disk nor the permissions explain it.
_CAUSES = {
    _FULL: ("the disk holding it was full", "Free space on that disk, then try again."),
    _IOERR: ("reading or writing the disk failed", "Check the disk (its free space, `dmesg`), "
             "then try again."),
    _CANTOPEN: ("the file or its folder cannot be opened", "Check that the folder exists and "
                "that this account may read and write it."),
    _READONLY: ("the file cannot be written", "Check that it was not moved or replaced while "
                "open and that this account may write it, then try again."),
}


def _result_code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    return next((c for text, c in _CODES_BY_MESSAGE.items() if text in str(err)), None)


def failure(path: Path, err: sqlite3.Error, outcome: str, need: str = "write") -> StoreError:
    """What really stopped SQLite on ``path``: its result code, told with the disk's state
    (full, read-only, a file-size limit) and the permissions ``need`` asks ("read", "write");
    ``outcome``: what became of the database (e.g. "it was left untouched")."""
    code = _result_code(err)
    if code in (_CORRUPT, _NOTADB):
        return StoreError(f"{path}: the rating database is corrupt ({err}); {outcome}. Restore it "
                          "from a backup.")
    problem = disk_problem(path.parent) if code in (_READONLY, _IOERR, _FULL, _CANTOPEN) else None
    if problem is None and code in (_PERM, _READONLY, _CANTOPEN):
        blocked = _blocked(path, need) if os.path.isdir(path.parent) else []
        if blocked:
            return access_error(blocked, need, path.parent)
    if problem is None:
        problem = _CAUSES.get(code, ("database error", "Check free disk space and write "
                                     "permission, and run PRAGMA integrity_check if it persists."))
    what, remedy = problem
    return StoreError(f"{path}: {what} (SQLite: {err}); {outcome}. {remedy}")
