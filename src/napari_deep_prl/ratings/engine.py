"""What the rating store needs from a database engine, and the transactions it runs on one.

The store (:mod:`.store`) holds the logic: validation, append-only history, consensus,
predictions; it speaks portable SQL with ``?`` placeholders (``RETURNING`` and ``ON CONFLICT``
work on both engines). An engine supplies what differs between an embedded SQLite file
(:mod:`.sqlite_file`) and a PostgreSQL server (:mod:`.postgres`): connecting, the schema's DDL and
its migrations, the write lock, durability settings, and telling its errors as
:class:`~napari_deep_prl.base.errors.StoreError` that say what is wrong, where, and what to do.

Every write is one transaction that holds the engine's write lock (one writer at a time, as
SQLite does), is retried as a whole while another writer holds the lock, and is durable on
disk when :meth:`Engine.write` returns.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from napari_deep_prl.base.errors import StoreError

T = TypeVar("T")


class Cursor(Protocol):
    """The part of a DB-API cursor the store reads."""

    description: Any

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class Connection(Protocol):
    """A connection taking SQL with ``?`` placeholders (sqlite3's own; an adapter for psycopg)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


class Engine:
    """A rating store's connection and what differs between engines (subclasses fill it in).

    ``address`` names the store in every message (a file path, or a URL without password).
    """

    #: Total seconds a write keeps retrying while another writer holds the lock.
    busy_deadline_s = 120.0
    #: The exceptions of the engine's driver (told as StoreError by :meth:`failure`).
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, address: str, readonly: bool) -> None:
        self.address = address
        #: A snapshot for reading: writing through it is refused.
        self.readonly = readonly
        self._lock = threading.RLock()

    # -- what each engine fills in --------------------------------------------------------

    def connection(self) -> Connection:
        """The open connection (an engine that can reconnects a lost one here)."""
        raise NotImplementedError

    def begin(self, conn: Connection) -> None:
        """Start a write transaction holding the write lock."""
        raise NotImplementedError

    def commit(self, conn: Connection) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: Connection) -> None:
        """Roll back an open transaction (nothing when none is open or the link is gone)."""
        raise NotImplementedError

    def is_busy(self, err: BaseException) -> bool:
        """Whether ``err`` only says another writer holds the lock (worth retrying)."""
        raise NotImplementedError

    def failure(self, err: BaseException, outcome: str) -> StoreError:
        """What really stopped the engine, and what to do; ``outcome``: what became of the
        change (e.g. "nothing was changed")."""
        raise NotImplementedError

    def migrate(self, conn: Connection) -> None:
        """Create or upgrade the schema to the current version (inside a write transaction)."""
        raise NotImplementedError

    def integrity_check(self) -> str:
        """``"ok"`` when the engine finds the store healthy, else what it found."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- transactions ---------------------------------------------------------------------

    def read(self, fn: Callable[[Connection], T], outcome: str = "nothing was changed") -> T:
        """Run ``fn`` (reads only), retried while the store is busy."""
        with self._lock:
            return self._retry(lambda: fn(self.connection()), outcome)

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one durable write transaction, retried as a whole while busy."""
        if self.readonly:
            raise StoreError(f"{self.address}: opened read-only (a snapshot for reading), so "
                             "nothing can be written through it; open the project without "
                             "readonly.")

        def attempt() -> T:
            conn = self.connection()
            self.begin(conn)
            try:
                result = fn(conn)
                self.commit(conn)
            except BaseException:
                self.rollback(conn)
                raise
            return result

        with self._lock:
            return self._retry(attempt, "the change was not written")

    def _retry(self, fn: Callable[[], T], outcome: str) -> T:
        """Run ``fn`` until it is not refused for a busy store or the deadline passes; any other
        failure of the driver is told as what really stopped it (:meth:`failure`)."""
        deadline = time.monotonic() + self.busy_deadline_s
        delay = 0.005
        while True:
            try:
                return fn()
            except self.errors as err:
                if not self.is_busy(err):
                    raise self.failure(err, outcome) from err
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{self.address}: the database stayed locked for "
                        f"{self.busy_deadline_s:.0f} s; another program holds it. Close that "
                        "program and try again; nothing was written.") from err
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
