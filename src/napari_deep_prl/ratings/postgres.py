"""The rating store's PostgreSQL engine: one database on a server the raters of several sites share.

* **Addressed by a URL**, libpq's ``postgresql://[user@]host[:port]/database[?param=value]``
  (``?service=NAME`` takes the rest from a service file). ``project.json`` keeps the URL, so a
  password in it is refused: credentials come from PostgreSQL's own means, a password file
  (``~/.pgpass`` or the file ``PGPASSFILE`` names), a service file (``~/.pg_service.conf`` or
  ``PGSERVICEFILE``), the ``PG*`` environment (``PGPASSWORD``, ``PGUSER``...) or what the
  server's ``pg_hba.conf`` asks for (certificates, Kerberos).
* **Durable before return.** Every session sets ``synchronous_commit = on`` (whatever the
  server's default), so ``COMMIT`` returns once the write-ahead log is flushed to disk.
* **One writer at a time.** A write transaction takes a transaction-level advisory lock,
  released at commit, at rollback, or when its client dies; a wait longer than the busy timeout
  is retried as SQLite's busy database is (:class:`.engine.Engine`).
* **Faults said as such.** A server that is down, a lost connection, a refused login, a missing
  database, a missing privilege are each named, with what to do; the next call reconnects, so a
  rater retries without closing the review.
* **A commit cut off is settled, never guessed.** When the connection drops during ``COMMIT``
  the client cannot tell whether the server wrote the transaction, so it reconnects and asks the
  server (``pg_xact_status`` of the transaction's id): a committed change is reported saved, an
  aborted one unsaved (the rater tries again). When the server cannot be asked, the next write
  asks first, and refuses to run if the earlier change was stored after all, so a label the
  rater sends again is never stored twice.
* **Reading** (``readonly``) is one ``REPEATABLE READ READ ONLY`` transaction: a snapshot taken
  when the store is opened, as SQLite's read-only store is.

psycopg (3) is imported only when a PostgreSQL store is opened: it is the optional
``postgresql`` extra of the package.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.engine import Connection, Cursor, Engine

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql", "postgres")
#: Where the documentation explains a store on a PostgreSQL server.
DOCS = "docs/multisite.md"
#: What every session of the store sets (see the module's notes).
SESSION_SETTINGS = ("SET synchronous_commit TO on",)
#: PostgreSQL's error codes (SQLSTATE) of a wait for a lock or a conflict worth retrying.
_BUSY = ("55P03", "40001", "40P01")
_TABLES = ("store_info", "raters", "subjects", "lesions", "ratings", "consensus", "predictions")


def is_url(address: str | Path) -> bool:
    """Whether ``address`` names a PostgreSQL store (a ``postgresql://`` URL), not a file."""
    return isinstance(address, str) and address.partition("://")[0].lower() in SCHEMES \
        and "://" in address


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (what a message may show)."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


def check_url(url: str) -> str:
    """Refuse a store URL that is not a PostgreSQL URL, names no database, or holds a password
    (``project.json`` keeps the URL); return it."""
    if not is_url(url):
        raise InputError(f"store '{redacted(url)}' is not a PostgreSQL URL; give "
                         "postgresql://[USER@]HOST[:PORT]/DATABASE, or no store for the project's "
                         "own ratings.sqlite.")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.password is not None or "password" in query:
        raise InputError(
            f"{redacted(url)}: the store URL carries a password, which project.json would keep in "
            "clear; nothing was created or opened. Remove it from the URL and give it to "
            "PostgreSQL by its own means: a line in ~/.pgpass (or the file PGPASSFILE names), an "
            f"entry of a service file (?service=NAME), or PGPASSWORD ({DOCS}).")
    if not parts.path.strip("/") and not {"dbname", "service"} & set(query):
        raise InputError(f"{url}: no database named. Give postgresql://HOST/DATABASE (one "
                         f"database per project; create it with `createdb`, {DOCS}).")
    return url


def _driver() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        raise StoreError("a PostgreSQL rating store needs psycopg, which is not installed. "
                         "Install it with `pip install 'napari-deep-prl[postgresql]'`.") from None
    return psycopg


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (no literal ``?`` in its SQL)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection taking the store's SQL (``?`` placeholders)."""

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(_placeholders(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in rows]
        if rows:
            with self.raw.cursor() as cursor:
                cursor.executemany(_placeholders(sql), rows)

    @property
    def alive(self) -> bool:
        return not self.raw.closed and not self.raw.broken


def _detail(err: BaseException) -> str:
    """The driver's message on one line."""
    return " ".join(str(err).split())[:300] or type(err).__name__


class PostgresEngine(Engine):
    """A rating store in a PostgreSQL database (one database per project)."""

    def __init__(self, url: str, busy_timeout_s: float) -> None:
        super().__init__(url, readonly=False)
        self._psycopg = _driver()
        self.errors = (self._psycopg.Error,)
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.conn: _Connection | None = None
        #: The id of the open write transaction (what is asked when its commit is cut off).
        self._xid: str | None = None
        #: A transaction whose commit was cut off while the server could not be asked.
        self._unsettled: str | None = None

    @classmethod
    def open(cls, url: str, *, create: bool, readonly: bool,
             busy_timeout_s: float) -> PostgresEngine:
        """Connect, inspect the database (nothing is written to a missing, foreign or too-new
        store), create or migrate the schema, or with ``readonly`` take a snapshot."""
        engine = cls(check_url(url), busy_timeout_s)
        try:
            version = engine.read(lambda conn: engine._inspect(conn, create))
            if version < schema.SCHEMA_VERSION:
                if readonly:
                    raise StoreError(f"{url}: the rating store has schema {version}, older than "
                                     f"this version's {schema.SCHEMA_VERSION}; it was left "
                                     "untouched. Open the project once for writing (e.g. "
                                     "`deep-prl ratings add`) to upgrade it, then read it.")
                engine.write(engine.migrate)
            if readonly:  # the snapshot is taken by the first query after BEGIN
                engine.read(lambda conn: (conn.execute(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), conn.execute("SELECT 1")))
                engine.readonly = True
        except BaseException:
            engine.close()
            raise
        return engine

    def _connect(self) -> _Connection:
        options: dict[str, Any] = {"autocommit": True, "application_name": "napari-deep-prl"}
        if "connect_timeout" not in parse_qs(urlsplit(self.url).query):
            options["connect_timeout"] = 10
        raw = self._psycopg.connect(self.url, **options)
        try:
            for setting in SESSION_SETTINGS:
                raw.execute(setting)
            raw.execute(f"SET lock_timeout TO {max(1, round(self.busy_timeout_s * 1000))}")
        except BaseException:
            raw.close()
            raise
        return _Connection(raw)

    def _inspect(self, conn: Connection, create: bool) -> int:
        """The store's schema version (0: an empty database, with ``create``); refuses a
        database without a store, a foreign one and a newer schema, writing nothing."""
        if conn.execute("SELECT to_regclass('store_info')").fetchone()[0] is None:
            tables = conn.execute("SELECT count(*) FROM information_schema.tables "
                                  "WHERE table_schema = current_schema()").fetchone()[0]
            if tables and not create:
                raise StoreError(f"{self.address}: this database holds other tables and no "
                                 "napari-deep-prl rating store; it was left untouched. Check the "
                                 "URL.")
            if tables:
                raise StoreError(f"{self.address}: this database already holds other tables, so "
                                 "no rating store was made in it; it was left untouched. Give the "
                                 f"project an empty database of its own (`createdb`, {DOCS}).")
            if not create:
                raise StoreError(f"{self.address}: no rating store in this database. Create the "
                                 "project with `deep-prl project init DIR --manifest MANIFEST "
                                 f"--store {self.address}`, or check the URL.")
            return 0
        application, version = conn.execute(
            "SELECT application, schema_version FROM store_info").fetchone()
        if application != schema.POSTGRES_APPLICATION:
            raise StoreError(f"{self.address}: not a napari-deep-prl rating store (its store_info "
                             f"says {application!r}); it was left untouched. Check the URL.")
        if version > schema.SCHEMA_VERSION:
            raise StoreError(f"{self.address}: written by a newer napari-deep-prl (schema "
                             f"{version}, this version reads up to {schema.SCHEMA_VERSION}); it "
                             "was left untouched. Upgrade the package.")
        return int(version)

    def migrate(self, conn: Connection) -> None:
        """Create or upgrade the schema; re-read the version under the write lock."""
        version = self._inspect(conn, create=True)
        if version == 0:
            for statement in schema.POSTGRES_SCHEMA:
                conn.execute(statement)
            version = schema.POSTGRES_BASE_VERSION
        for step in range(version, schema.SCHEMA_VERSION):
            for statement in schema.POSTGRES_MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute("UPDATE store_info SET schema_version = ?", (schema.SCHEMA_VERSION,))

    # -- the engine's part of every transaction --------------------------------------------

    def connection(self) -> _Connection:
        if self.conn is not None and self.conn.alive:
            return self.conn
        if self.conn is not None and self.readonly:
            raise StoreError(f"{self.address}: the connection to the PostgreSQL server was lost, "
                             "and with it the snapshot being read; nothing was changed. Run it "
                             "again once the server is back.")
        self.conn = self._connect()
        return self.conn

    def begin(self, conn: Connection) -> None:
        if self._unsettled is not None:
            self._settle_earlier(conn)
        conn.execute("BEGIN")
        self._xid = conn.execute("SELECT pg_current_xact_id()::text, pg_advisory_xact_lock(?)",
                                 (schema.APPLICATION_ID,)).fetchone()[0]

    def commit(self, conn: Connection) -> None:
        try:
            conn.execute("COMMIT")
        except self._psycopg.OperationalError as err:
            if self.conn is None or self.conn.alive:
                raise
            outcome = self._outcome(self._xid)
            if outcome == "committed":
                return  # the server wrote it before the link went: saved, once
            if outcome == "aborted":
                raise StoreError(
                    f"{self.address}: the connection to the PostgreSQL server was lost during the "
                    f"commit ({_detail(err)}); the server rolled the change back, so it was not "
                    "written. Try again: the next attempt reconnects.") from err
            self._unsettled = self._xid
            raise StoreError(
                f"{self.address}: the connection to the PostgreSQL server was lost during the "
                f"commit ({_detail(err)}) and the server cannot be asked whether it wrote the "
                "change. Check the server, then try again: the next attempt first asks the server, "
                "and a change it stored already is not stored twice.") from err

    def _outcome(self, xid: str | None) -> str | None:
        """What became of transaction ``xid`` ("committed" or "aborted"), asked on a new
        connection; ``None`` when the server cannot be reached or does not know yet."""
        if xid is None:
            return None
        try:
            self.conn = self._connect()
            deadline = time.monotonic() + 10.0
            while True:  # "in progress": the cut-off backend has not finished exiting yet
                status = self.conn.execute("SELECT pg_xact_status(?::xid8)", (xid,)).fetchone()[0]
                if status != "in progress" or time.monotonic() > deadline:
                    return status if status in ("committed", "aborted") else None
                time.sleep(0.05)
        except self._psycopg.Error:
            return None

    def _settle_earlier(self, conn: Connection) -> None:
        """Before writing again: ask whether the change whose commit was cut off was stored, and
        refuse this write if it was (it is most likely the same label, sent again)."""
        xid = self._unsettled
        status = conn.execute("SELECT pg_xact_status(?::xid8)", (xid,)).fetchone()[0]
        if status == "in progress":
            raise StoreError(f"{self.address}: the change whose commit was cut off earlier is still "
                             "being finished by the server; nothing more was written. Try again "
                             "in a moment.")
        self._unsettled = None
        if status == "committed":
            raise StoreError(
                f"{self.address}: the change whose commit was cut off earlier had been stored by "
                "the server after all, so this one was not written: a label sent again would be "
                "stored twice. Check what is saved (the review shows your label) and, if this was "
                "another change, make it again.")

    def rollback(self, conn: Connection) -> None:
        if self.conn is None or not self.conn.alive:
            return  # the server rolls back a transaction whose client is gone
        raw = self.conn.raw
        if raw.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            try:
                raw.execute("ROLLBACK")
            except self._psycopg.OperationalError:
                pass  # the link went down meanwhile: the server rolls it back

    def is_busy(self, err: BaseException) -> bool:
        return getattr(err, "sqlstate", None) in _BUSY

    def failure(self, err: BaseException, outcome: str) -> StoreError:
        detail, text = _detail(err), str(err)
        where = self.address
        if isinstance(err, self._psycopg.OperationalError) and (
                self.conn is None or not self.conn.alive):
            if re.search(r"authentication failed|no password supplied|role \".*\" does not "
                         r"exist", text):
                return StoreError(
                    f"{where}: the PostgreSQL server refused the login ({detail}); {outcome}. "
                    "Check the user name in the URL (or PGUSER) and the password PostgreSQL finds "
                    "for it: ~/.pgpass (or PGPASSFILE), the service file, or PGPASSWORD; it is "
                    f"never read from the URL or project.json ({DOCS}).")
            if re.search(r"database \".*\" does not exist", text):
                return StoreError(
                    f"{where}: no such database on that server ({detail}); {outcome}. Create it "
                    f"(`createdb -h HOST -U USER DATABASE`, {DOCS}) or correct the URL.")
            return StoreError(
                f"{where}: cannot reach the PostgreSQL server ({detail}); {outcome}. Check that "
                "the server is running and that this machine can reach it (ask its "
                "administrator), then try again: the next attempt reconnects, and a review left "
                "open keeps the label on screen.")
        sqlstate = getattr(err, "sqlstate", None)
        if sqlstate == "42501":
            return StoreError(
                f"{where}: this PostgreSQL account lacks a privilege ({detail}); {outcome}. Ask "
                "the database's owner to grant it SELECT, INSERT and UPDATE on the store's tables "
                f"({DOCS}).")
        if sqlstate == "53100":
            return StoreError(f"{where}: the PostgreSQL server's disk is full ({detail}); "
                              f"{outcome}. Ask its administrator to free space, then try again.")
        if sqlstate == "25006":
            return StoreError(f"{where}: the server only allows reading (a standby or a "
                              f"read-only database: {detail}); {outcome}. Point the URL at the "
                              "primary server.")
        return StoreError(f"{where}: PostgreSQL error ({detail}); {outcome}. Check the server's "
                          "log, and report it if it persists.")

    def integrity_check(self) -> str:
        """PostgreSQL checks its pages and constraints itself; this reads every table once
        (a damaged page fails the read) and says ``"ok"``."""
        def check(conn: Connection) -> str:
            for table in _TABLES:
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            return "ok"
        return self.read(check)

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                self.conn.raw.close()
