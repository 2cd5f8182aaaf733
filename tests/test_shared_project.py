"""A project folder shared by raters' OS accounts: every file honours the umask and the group.

The first tests need no privileges: they check the modes the package's writers give under
``umask 002`` and ``022``. The ``accounts`` tests create a group and two rater accounts (they
need root, as in CI) and run the command line and the store *as* each rater, in forked
processes that dropped root, in a setgid folder of that group (docs/ratings.md).
"""

from __future__ import annotations

import contextlib
import grp
import importlib.abc
import io
import os
import pickle
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from model_support import TINY
from ratings_support import make_store

import napari_deep_prl.cli as cli
from napari_deep_prl.base.errors import InputError, StoreError
from napari_deep_prl.base.tables import write_atomic, write_table, write_text
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.model.checkpoint import Checkpoint
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.ratings.project import Project

UMASKS = (0o002, 0o022)


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """The process umask set to ``value`` for the block."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


WRITERS = {
    "text": lambda path: write_text(path, "a\n"),
    "table": lambda path: write_table(pd.DataFrame({"a": [1]}), path),
    "binary": lambda path: write_atomic(path, lambda fh: fh.write(b"\0" * 10), binary=True),
}


@pytest.mark.parametrize("value", UMASKS)
@pytest.mark.parametrize("writer", WRITERS)
def test_new_file_gets_the_mode_open_gives(tmp_path, value, writer):
    with umask(value):
        written = WRITERS[writer](tmp_path / "new.tsv")
        with open(tmp_path / "by_open.tsv", "w"):
            pass
    assert mode(written) == mode(tmp_path / "by_open.tsv") == 0o666 & ~value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by_open.tsv", "new.tsv"]


@pytest.mark.parametrize("value", UMASKS)
@pytest.mark.parametrize("kept", (0o660, 0o604, 0o664))
def test_replaced_file_keeps_its_mode(tmp_path, value, kept):
    path = tmp_path / "labels.tsv"
    path.write_text("old\n")
    path.chmod(kept)
    with umask(value):
        write_text(path, "new\n")
    assert (path.read_text(), mode(path)) == ("new\n", kept)
    assert list(tmp_path.iterdir()) == [path]


def _sqlite_files(folder: Path, name: str) -> list[Path]:
    return [folder / name, folder / f"{name}-wal", folder / f"{name}-shm"]


@pytest.mark.parametrize("value", UMASKS)
def test_rating_store_and_its_wal_follow_the_umask(tmp_path, value):
    with umask(value), make_store(tmp_path / "ratings.sqlite") as store:
        store.add_rating("ana", "sub-00", 1, "prl")
        assert {p.name: mode(p) for p in _sqlite_files(tmp_path, "ratings.sqlite")} == dict.fromkeys(
            ["ratings.sqlite", "ratings.sqlite-wal", "ratings.sqlite-shm"], 0o666 & ~value)



def tiny_checkpoint() -> Checkpoint:
    return Checkpoint(DeepPRL(TINY, 8).eval(), 0.5, PatchConfig(size=8))


def test_project_folder_is_group_writable_under_umask_002(tmp_path, manifest):
    with umask(0o002):
        with Project.init(tmp_path / "study", manifest) as project:
            project.store.add_rating("ana", "sub-01", 1, "prl")
            write_table(project.export(), project.exports_dir / "labels.tsv")
            tiny_checkpoint().save(project.models_dir / "model.pt")
        held = {p.relative_to(tmp_path).as_posix(): mode(p) for p in tmp_path.joinpath("study").rglob("*")}
    assert held == {"study/project.json": 0o664, "study/ratings.sqlite": 0o664,
                    "study/models": 0o775, "study/models/model.pt": 0o664,
                    "study/exports": 0o775, "study/exports/labels.tsv": 0o664}


# -- two real accounts -------------------------------------------------------------------------

GROUP = "dprl-raters"
RATERS = ("dprl-rater-a", "dprl-rater-b")
#: Seconds a rater's process may take for one step before the test gives up on it.
STEP_TIMEOUT_S = 120


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def _ensure(exists: Callable[[], object], command: list[str]) -> None:
    """Run ``command`` unless ``exists()``; another test run may have just done it."""
    if exists():
        return
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if not exists():
        pytest.fail(f"`{' '.join(command)}` failed: {done.stderr.strip()}")


def _known(lookup: Callable[[str], object], name: str) -> bool:
    try:
        return bool(lookup(name))
    except KeyError:
        return False


def _member(name: str) -> bool:
    return name in grp.getgrnam(GROUP).gr_mem


@pytest.fixture(scope="module")
def accounts() -> dict[str, Account]:
    """The raters' group and two accounts in it, created when missing (kept for later runs)."""
    if not hasattr(os, "fork"):
        pytest.skip("needs POSIX accounts and os.fork")
    if os.geteuid() != 0:
        pytest.skip("needs root to create the two rater accounts (CI runs the tests as root)")
    _ensure(partial(_known, grp.getgrnam, GROUP), ["groupadd", "--system", GROUP])
    for name in RATERS:
        _ensure(partial(_known, pwd.getpwnam, name),
                ["useradd", "--system", "--no-create-home", "--user-group", "--groups", GROUP, name])
        _ensure(partial(_member, name), ["usermod", "--append", "--groups", GROUP, name])
    return {name: Account(name, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid) for name in RATERS}


class _NoNewImports(importlib.abc.MetaPathFinder):
    """In a rater's process, refuse modules the parent had not imported: in CI the raters may
    not read the interpreter's or the checkout's files (0700 folders), so this makes every
    machine behave like CI."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name in sys.builtin_module_names:
            return None
        raise ImportError(f"{name} was first imported in a rater's process; the rehearsal "
                          "as root should have imported it")


class Rater:
    """``fn(*args)`` run in a forked child that became ``account`` with ``umask``, as a rater's
    own process would; its result (or traceback) comes back pickled through a pipe."""

    def __init__(self, account: Account, umask_value: int, fn: Callable[..., Any], *args: Any) -> None:
        self.account = account
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12: fork with threads
            pid = os.fork()
        if pid == 0:
            os.close(read)
            self._child(write, umask_value, fn, args)
        os.close(write)
        self.pid, self._read = pid, read

    def _child(self, write: int, umask_value: int, fn: Callable[..., Any], args: tuple) -> None:
        """Never returns into pytest: ends with ``os._exit``."""
        output = io.StringIO()
        try:
            os.chdir("/")
            os.initgroups(self.account.name, self.account.gid)
            os.setgid(self.account.gid)
            os.setuid(self.account.uid)
            os.umask(umask_value)
            sys.meta_path.insert(0, _NoNewImports())
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                outcome = ("returned", fn(*args))
        except BaseException:  # noqa: BLE001 (any failure means the same here)
            outcome = ("raised", traceback.format_exc())
        try:
            with os.fdopen(write, "wb") as fh:
                pickle.dump((*outcome, output.getvalue()), fh)
        finally:
            os._exit(0)

    def result(self) -> Any:
        """Wait for the child; fail the test with its traceback if it raised."""
        if not select.select([self._read], [], [], STEP_TIMEOUT_S)[0]:
            self.kill()
            pytest.fail(f"{self.account.name}'s process did not finish in {STEP_TIMEOUT_S} s")
        with os.fdopen(self._read, "rb") as fh:
            data = fh.read()
        self._reap(0)
        if not data:
            pytest.fail(f"{self.account.name}'s process died without a result")
        kind, value, output = pickle.loads(data)
        if kind == "raised":
            pytest.fail(f"as {self.account.name}:\n{value}\nits output:\n{output}")
        return value

    def kill(self) -> None:
        """End the child if it is still there (a failed test may leave one waiting)."""
        if self._reap(os.WNOHANG):
            return
        os.kill(self.pid, signal.SIGKILL)
        self._reap(0)

    def _reap(self, options: int) -> bool:
        """Whether the child has ended (and is collected)."""
        if self.pid == 0:
            return True
        if os.waitpid(self.pid, options) == (0, 0):
            return False
        self.pid = 0
        return True


class Raters:
    """Starts functions as the rater accounts and ends what is left at teardown."""

    def __init__(self, accounts: dict[str, Account]) -> None:
        self.accounts = accounts
        self.started: list[Rater] = []

    def start(self, name: str, umask_value: int, fn: Callable[..., Any], *args: Any) -> Rater:
        self.started.append(Rater(self.accounts[name], umask_value, fn, *args))
        return self.started[-1]

    def run(self, name: str, umask_value: int, fn: Callable[..., Any], *args: Any) -> Any:
        return self.start(name, umask_value, fn, *args).result()


@pytest.fixture
def raters(accounts) -> Iterator[Raters]:
    started = Raters(accounts)
    yield started
    for rater in started.started:
        rater.kill()


def deep_prl(*args: object) -> tuple[int, str]:
    """The command line in this process: exit code and everything it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = cli.main([str(a) for a in args])
    return code, printed.getvalue()


def check(result: tuple[int, str]) -> str:
    code, printed = result
    assert code == 0, printed
    return printed


# The raters' steps. They run as root once first (the rehearsal), so that every module they
# need is imported before a rater's process is forked.

def create_project(project: Path, manifest: Path, checkpoint: Checkpoint) -> None:
    """Rater A sets the project up: init, a rating, an export, a model."""
    check(deep_prl("project", "init", project, "--manifest", manifest, "--quiet"))
    check(deep_prl("ratings", "add", project, "--rater", "ana", "--subject", "sub-01",
                   "--lesion", 1, "--label", "prl"))
    check(deep_prl("ratings", "export", project, "-o", project / "exports" / "labels.tsv"))
    checkpoint.save(project / "models" / "model.pt")


def hold_open(project: Path, ready: int, release: int) -> None:
    """Rater A keeps the project open (its new rating still in the WAL) until told to close it."""
    with Project.open(project) as opened:
        opened.store.add_rating("ana", "sub-02", 1, "not_prl")
        os.write(ready, b"!")
        os.read(release, 1)


def add_ratings(project: Path, subject: str) -> None:
    """Rater B rates from the command line and through the Python API, then re-exports."""
    check(deep_prl("ratings", "add", project, "--rater", "ben", "--subject", subject,
                   "--lesion", 1, "--label", "unsure"))
    with Project.open(project) as opened:
        opened.store.add_rating("ben", subject, 2, "prl")
    check(deep_prl("ratings", "export", project, "-o", project / "exports" / "labels.tsv"))


def ratings(project: Path) -> list[tuple[str, str, int, str]]:
    with Project.open(project) as opened:
        table = opened.export("long")
    return sorted(table[["rater", "subject", "lesion", "label"]].itertuples(index=False, name=None))


def open_error(project: Path) -> str:
    with pytest.raises(StoreError) as opening:
        Project.open(project)
    return str(opening.value)


def refused(project: Path) -> tuple[tuple[int, str], str, str]:
    """What rater B gets in a project created with umask 022: the command, the API, an export."""
    command = deep_prl("ratings", "add", project, "--rater", "ben", "--subject", "sub-01",
                       "--lesion", 1, "--label", "prl")
    with pytest.raises(InputError) as export:
        write_table(pd.DataFrame({"a": [1]}), project / "exports" / "labels.tsv")
    return command, open_error(project), str(export.value)


def repair(project: Path) -> None:
    """The fix docs/ratings.md gives, run by the project's owner."""
    subprocess.run(["sh", "-c", f'chgrp -R {GROUP} "$1" && chmod -R g+rwX "$1" && '
                                'find "$1" -type d -exec chmod g+s {} +', "sh", project], check=True)


@dataclass(frozen=True)
class Lab:
    folder: Path
    manifest: Path
    checkpoint: Checkpoint


@pytest.fixture
def lab(accounts, write_subject) -> Iterator[Lab]:
    """A setgid folder of the raters' group (mode 2775) beside a cohort everyone may read."""
    base = Path(tempfile.mkdtemp(prefix="dprl-shared-", dir="/tmp"))
    try:
        cohort = [write_subject(f"sub-0{i}", seed=i, folder=base / "cohort") for i in (1, 2)]
        manifest = write_manifest(cohort, base / "cohort" / "manifest.csv")
        for path in [base, *base.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        folder = base / "lab"
        folder.mkdir()
        os.chown(folder, -1, grp.getgrnam(GROUP).gr_gid)
        folder.chmod(0o2775)
        checkpoint = tiny_checkpoint()
        rehearsal = base / "rehearsal"
        create_project(rehearsal, manifest, checkpoint)
        add_ratings(rehearsal, "sub-02")
        ratings(rehearsal)
        yield Lab(folder, manifest, checkpoint)
    finally:
        shutil.rmtree(base)


def modes_and_groups(folder: Path) -> dict[str, tuple[str, str]]:
    """``{relative path: (mode, group)}`` of the folder and everything in it."""
    return {p.relative_to(folder.parent).as_posix(): (f"{mode(p):04o}", p.group())
            for p in [folder, *folder.rglob("*")]}


def everything_shared(folder: Path, *files: str) -> dict[str, tuple[str, str]]:
    """What ``modes_and_groups`` must give: setgid group folders, group-writable files."""
    folders = ["", "/models", "/exports"]
    return {**{folder.name + f: ("2775", GROUP) for f in folders},
            **{f"{folder.name}/{f}": ("0664", GROUP) for f in files}}


PROJECT_FILES = ("project.json", "ratings.sqlite", "exports/labels.tsv", "models/model.pt")


@pytest.mark.accounts
def test_two_accounts_share_a_project(lab, raters):
    a, b = RATERS
    project = lab.folder / "study"
    raters.run(a, 0o002, create_project, project, lab.manifest, lab.checkpoint)
    assert modes_and_groups(project) == everything_shared(project, *PROJECT_FILES)

    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    holder = raters.start(a, 0o002, hold_open, project, ready_w, release_r)
    assert select.select([ready_r], [], [], STEP_TIMEOUT_S)[0], "rater A never opened the project"
    assert os.read(ready_r, 1) == b"!"
    raters.run(b, 0o002, add_ratings, project, "sub-01")
    assert modes_and_groups(project) == everything_shared(
        project, *PROJECT_FILES, "ratings.sqlite-wal", "ratings.sqlite-shm")
    assert project.joinpath("ratings.sqlite-wal").owner() == a  # A's companions, written by B
    os.write(release_w, b"!")
    holder.result()
    for fd in (ready_r, ready_w, release_r, release_w):
        os.close(fd)
    assert not project.joinpath("ratings.sqlite-wal").exists()  # the last one out removed them

    raters.run(b, 0o002, add_ratings, project, "sub-02")  # now B creates the WAL
    assert modes_and_groups(project) == everything_shared(project, *PROJECT_FILES)
    assert project.joinpath("exports", "labels.tsv").owner() == b  # B replaced A's export
    assert raters.run(a, 0o002, ratings, project) == [
        ("ana", "sub-01", 1, "prl"), ("ana", "sub-02", 1, "not_prl"),
        ("ben", "sub-01", 1, "unsure"), ("ben", "sub-01", 2, "prl"),
        ("ben", "sub-02", 1, "unsure"), ("ben", "sub-02", 2, "prl")]
    exported = pd.read_csv(project / "exports" / "labels.tsv", sep="\t")
    assert {"rater_ana", "rater_ben"} <= set(exported.columns)


@pytest.mark.accounts
def test_a_project_made_with_umask_022_is_refused_clearly_until_repaired(lab, raters):
    a, b = RATERS
    project = lab.folder / "closed"
    raters.run(a, 0o022, create_project, project, lab.manifest, lab.checkpoint)
    (code, printed), opening, export = raters.run(b, 0o002, refused, project)
    assert code == 2
    assert len(printed.strip().splitlines()) == 1 and "Traceback" not in printed
    for message in (printed, opening):
        assert f"{project} (mode 2755, owner {a}, group {GROUP})" in message
        assert f"chmod -R g+rwX {project}" in message
        assert "docs/ratings.md" in message
    assert str(project / "exports" / "labels.tsv") in export and "group-writable" in export
    raters.run(a, 0o022, os.chmod, project / "project.json", 0o600)  # as older versions wrote it
    unreadable = raters.run(b, 0o002, open_error, project)
    assert f"{project / 'project.json'} (mode 0600, owner {a}, group {GROUP}): this account may " \
           "not read it" in unreadable

    raters.run(a, 0o022, repair, project)
    raters.run(b, 0o002, add_ratings, project, "sub-01")
    assert ("ben", "sub-01", 1, "unsure") in raters.run(a, 0o022, ratings, project)
