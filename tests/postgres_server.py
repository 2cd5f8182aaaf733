"""A throwaway PostgreSQL server for the store tests.

``initdb`` into a temporary folder, listening on 127.0.0.1 only, on a free port, its socket in
that folder; run as the ``postgres`` account when the tests run as root (PostgreSQL refuses to
run as root). The superuser ``deep_prl`` logs in without password from loopback; the role
``rater_pw`` (password :data:`PASSWORD`) must give its password, for the credential tests.
Anything that stops the server from starting raises: a store test never silently skips.

The tests' server runs with ``fsync=off`` unless asked otherwise: they kill clients, never the
server, and the store's own durability setting (``synchronous_commit``) is checked by its test;
without fsync the many small databases the tests create cost no disk flushes (a shutdown after
them otherwise takes minutes on a busy disk). Benchmarks ask for ``fsync=True``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

SUPERUSER = "deep_prl"
PASSWORD_ROLE = "rater_pw"
PASSWORD = "s3cret-for-tests"


def _bindir() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                           "install Debian's `postgresql` package (scripts/setup.sh does).")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One running server; :meth:`new_database` hands each test an empty database."""

    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync
        self.bindir = _bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="deep-prl-postgres-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.account = "postgres" if os.geteuid() == 0 else None
        self._names = itertools.count()
        if self.account is not None:
            account = pwd.getpwnam(self.account)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n")
        self.start()
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.account is not None:
            command = ["runuser", "-u", self.account, "--", *command]
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True)
        if done.returncode != 0:
            log = self.folder / "server.log"
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}\n"
                               + (log.read_text()[-3000:] if log.exists() else ""))

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
                  "-t", "300", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} "
                  f"-c unix_socket_directories={self.folder} -c fsync={'on' if self.fsync else 'off'}",
                  "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "300", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True)

    def new_database(self, owner: str = SUPERUSER, icu_locale: str | None = None) -> str:
        """The URL of a new, empty database (of ``owner``, who logs in by that URL); with
        ``icu_locale`` (e.g. "en-US") its text sorts by that language's rules."""
        name = f"store_{next(self._names)}"
        locale = (f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
                  if icu_locale else "")
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {owner}{locale}")
        return self.url(name, owner)

    @contextlib.contextmanager
    def commits_hang(self) -> Iterator[None]:
        """While inside: every commit waits for a synchronous standby that never comes, after
        the server has written it; ending its backend then cuts the client off during COMMIT
        with the change stored (:func:`backend_in_commit` finds it)."""
        with self.admin() as admin:
            admin.execute("CREATE TABLE IF NOT EXISTS commit_probe (n int)")
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
            admin.execute("SELECT pg_reload_conf()")
            while not self._a_commit_hangs(admin):  # the reload reaches every process in time
                pass
        try:
            yield
        finally:
            self.release_commits(reload=True)

    def release_commits(self, reload: bool) -> None:
        """Commits no longer wait (from the next start of the server, or now with ``reload``;
        a reload also lets a hanging commit return)."""
        with self.admin() as admin:
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            if reload:
                admin.execute("SELECT pg_reload_conf()")

    def _a_commit_hangs(self, admin: psycopg.Connection) -> bool:
        """Whether a probe's commit waits for the standby (then it is cancelled: a cancelled
        wait keeps the commit). The probe writes to a table of its own: a temporary table would
        be dropped, and that committed, when the probe disconnects, hanging its backend."""
        with psycopg.connect(self.url(), autocommit=True, application_name="probe") as probe:
            worker = threading.Thread(target=probe.execute, args=("INSERT INTO commit_probe VALUES (1)",))
            worker.start()
            pid = backend_in_commit(admin, "probe", timeout_s=1.0)
            if pid is not None:
                admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
            worker.join()
            return pid is not None


def backend_in_commit(admin: psycopg.Connection, application: str = "napari-deep-prl",
                      timeout_s: float = 60.0) -> int | None:
    """The process id of the backend of ``application`` that waits in COMMIT for a standby
    (see :meth:`PostgresServer.commits_hang`); ``None`` if none does within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                              "AND wait_event = 'SyncRep'", (application,)).fetchone()
        if found is not None:
            return int(found[0])
        time.sleep(0.02)
    return None
