"""Full disks, read-only projects, refused databases, half-written outputs (issue #31, 5-7 and 10).

A full disk is a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored so a write gets EFBIG) in a
child process, or a tiny tmpfs where this account may mount one; a read-only project is a folder
without write permission, read as another account (``nobody``, in a forked child) when the tests
run as root.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from model_support import SIZE, TINY, one_torch_thread  # noqa: F401
from ratings_support import make_store
from test_shared_project import Account, Rater, check
from test_shared_project import deep_prl as shared_cli

import napari_deep_prl.cli.train as cli_train
from napari_deep_prl.base.errors import StoreError
from napari_deep_prl.base.progress import run_to_end
from napari_deep_prl.base.tables import write_table
from napari_deep_prl.cli import main
from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.patches import PatchConfig
from napari_deep_prl.evaluation.crossval import CVConfig, merge, run_cv
from napari_deep_prl.model.checkpoint import Checkpoint, load_checkpoint
from napari_deep_prl.model.network import DeepPRL
from napari_deep_prl.ratings import schema
from napari_deep_prl.ratings.project import Project
from napari_deep_prl.ratings.store import Rating, RatingStore

NOBODY = 65534
TIMEOUT_S = 300


def deep_prl(*args: object, file_size: int | None = None) -> subprocess.CompletedProcess:
    """The command line in a child process; with ``file_size``, no file it writes may grow past
    that many bytes (a full disk)."""
    def limit() -> None:
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return subprocess.run([sys.executable, "-m", "napari_deep_prl.cli", *map(str, args)],
                          capture_output=True, text=True, preexec_fn=limit, timeout=TIMEOUT_S,
                          check=False)


def refused(done: subprocess.CompletedProcess, *words: str) -> str:
    """Assert exit 2 with one line on stderr, no traceback, holding ``words``; return the line."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


def in_process(capsys, *args: object) -> tuple[int, str]:
    """``deep-prl ARGS`` in this process: exit code and stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def labels(export: Path) -> list[tuple[str, str, int, str]]:
    """The (rater, subject, lesion, label) rows of a long export."""
    table = pd.read_csv(export, sep="\t")
    return list(table[["rater", "subject", "lesion", "label"]].itertuples(index=False, name=None))


def hot_wal(path: Path, *statements: str) -> None:
    """Leave a pending write-ahead log: a process writes ``statements`` and dies unclosed."""
    code = ("import os, sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "conn.execute('PRAGMA journal_mode=WAL')\n"
            "for statement in sys.argv[2:]:\n"
            "    conn.execute(statement)\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(path), *statements], check=True)
    assert path.with_name(path.name + "-wal").stat().st_size > 0


def store_files(path: Path) -> dict[str, bytes | None]:
    """The database, its -wal and its -shm, byte for byte (None: absent)."""
    files = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]
    return {p.name: p.read_bytes() if p.exists() else None for p in files}


@pytest.fixture
def project(tmp_path, manifest) -> Path:
    with Project.init(tmp_path / "study", manifest) as opened:
        opened.store.add_rating("ana", "sub-01", 1, "prl")
    return tmp_path / "study"


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder under /tmp that every account may read (pytest's own are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="dprl-outputs-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder)


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 512 KB tmpfs with a few KB left: a full disk (needs the right to mount, as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        (disk / "filler").write_bytes(b"\0" * (512 - 8) * 1024)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def checkpoint_file(path: Path) -> Path:
    torch.manual_seed(0)
    return Checkpoint(DeepPRL(TINY, SIZE).eval(), 0.5, PatchConfig(size=SIZE)).save(path)


# -- 5. errors that lie -----------------------------------------------------------------------

def test_a_full_disk_is_told_as_such_and_reading_needs_no_space(project):
    """A file-size limit (a full disk) was reported as a corrupt database, even for an export."""
    done = deep_prl("ratings", "add", project, "--rater", "ben", "--subject", "sub-01",
                    "--lesion", 2, "--label", "prl", file_size=10_000)
    line = refused(done, f"{project / 'ratings.sqlite'}: ", "file-size limit", "ulimit -f")
    assert "corrupt" not in line and "backup" not in line
    exported = project.parent / "labels.tsv"
    done = deep_prl("ratings", "export", project, "--long", "-o", exported, file_size=10_000)
    assert done.returncode == 0, done.stderr
    assert labels(exported) == [("ana", "sub-01", 1, "prl")]


def as_reader(fn, *args):
    """``fn(*args)`` as an account that may not write the project: ``nobody`` in a forked child
    when this is root (see test_shared_project), else this account."""
    if os.geteuid() != 0:
        return fn(*args)
    return Rater(Account("nobody", NOBODY, NOBODY), 0o022, fn, *args).result()


def test_a_read_only_project_is_exported_and_rating_in_it_says_why_not(manifest, open_folder):
    with Project.init(open_folder / "study", manifest) as opened:
        opened.store.add_rating("ana", "sub-01", 1, "prl")
    study, out = open_folder / "study", open_folder / "out"
    out.mkdir()
    out.chmod(0o777)
    commands = [("ratings", "export", study, "--long", "-o", out / "labels.tsv"),
                ("ratings", "agreement", study, "-o", out / "agreement.tsv"),
                ("ratings", "add", study, "--rater", "ben", "--subject", "sub-01", "--lesion", 1,
                 "--label", "prl")]
    rehearsal = shutil.copytree(study, open_folder / "rehearsal")
    for command in commands:  # as root first: the reader's process may import nothing new
        check(shared_cli(*[rehearsal if part == study else part for part in command]))
    study.chmod(0o555)
    before = store_files(study / "ratings.sqlite")
    exported, agreed, rated = (as_reader(shared_cli, *command) for command in commands)
    assert exported[0] == 0 and agreed[0] == 0, (exported, agreed)
    assert labels(out / "labels.tsv") == [("ana", "sub-01", 1, "prl")]
    assert rated[0] == 2 and f"{study} (mode 0555" in rated[1] and "may not write" in rated[1]
    assert "Traceback" not in rated[1] and len(rated[1].strip().splitlines()) == 1
    assert store_files(study / "ratings.sqlite") == before


# -- 6. a refused database is never modified ---------------------------------------------------

def _newer(path: Path) -> None:
    make_store(path).close()
    hot_wal(path, f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}",
            "INSERT INTO raters (rater, created_at, kind) VALUES ('x', 'now', 'rater')")


def _foreign(path: Path) -> None:
    hot_wal(path, "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('mine')")


def _corrupt(path: Path) -> None:
    with make_store(path, subjects=30, lesions=20) as store:
        store.add_ratings([Rating("bob", f"sub-{s:02d}", n, "prl")
                           for s in range(30) for n in range(1, 21)])
    hot_wal(path, "INSERT INTO raters (rater, created_at, kind) VALUES ('y', 'now', 'rater')")
    data = bytearray(path.read_bytes())
    data[30 * 4096:31 * 4096] = b"\xa5" * 4096  # a page the log does not hold
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "message"), [
    (_newer, "written by a newer napari-deep-prl"),
    (_foreign, "not a napari-deep-prl rating database"),
    (_corrupt, "the rating database is corrupt"),
])
@pytest.mark.parametrize("readonly", [False, True])
def test_a_refused_database_with_a_pending_log_is_left_byte_identical(tmp_path, damage, message,
                                                                       readonly):
    path = tmp_path / "ratings.sqlite"
    damage(path)
    before = store_files(path)
    assert all(before.values())
    with pytest.raises(StoreError, match=f"{message}.*left untouched"):
        RatingStore.open(path, create=not readonly, readonly=readonly)
    assert store_files(path) == before


@pytest.mark.parametrize("shm", [True, False])
def test_a_pending_log_is_read_by_the_inspection_and_the_snapshot(tmp_path, shm):
    path = tmp_path / "ratings.sqlite"
    make_store(path).close()
    hot_wal(path, "INSERT INTO raters (rater, created_at, kind) VALUES ('ann', 'now', 'rater')")
    if not shm:  # e.g. copied without it: read through a private copy
        path.with_name(path.name + "-shm").unlink()
    before = store_files(path)
    with RatingStore.open(path, readonly=True) as store:
        assert store.raters()["rater"].tolist() == ["ann"]
        with pytest.raises(StoreError, match="opened read-only"):
            store.add_rating("ann", "sub-00", 1, "prl")
    assert store_files(path) == before
    with RatingStore.open(path) as store:
        store.add_rating("ann", "sub-00", 1, "prl")
    with RatingStore.open(path, readonly=True) as store:
        assert len(store.current()) == 1


# -- 7. outputs whole or absent ----------------------------------------------------------------

def test_probability_maps_on_a_full_disk_leave_nothing_behind(manifest, tmp_path):
    model = checkpoint_file(tmp_path / "model.pt")
    maps = tmp_path / "maps"
    done = deep_prl("score", manifest, "--model", model, "--nifti-dir", maps, "-o",
                    tmp_path / "scores.tsv", "--quiet", file_size=256)
    refused(done, "file-size limit")
    assert not any(maps.iterdir())  # no map under its name, no temporary file


def test_a_killed_export_leaves_no_temporary_file_behind(tmp_path):
    out = tmp_path / "labels.tsv"
    writer = ("import sys, time\n"
              "from napari_deep_prl.base.tables import write_atomic\n"
              "def write(fh):\n"
              "    fh.write('subject\\tlesion\\n' * 1000); fh.flush()\n"
              "    print('writing', flush=True); time.sleep(60)\n"
              "write_atomic(sys.argv[1], write)\n")
    child = subprocess.Popen([sys.executable, "-c", writer, str(out)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline() == "writing\n"
    child.kill()
    child.wait()
    child.stdout.close()
    (left,) = tmp_path.iterdir()  # what the kill left
    host, pid, token = left.name[len(".labels.tsv."):-len(".tmp")].rsplit("-", 2)
    assert pid == str(child.pid)
    running = tmp_path / f".labels.tsv.{host}-{os.getpid()}-{token}.tmp"  # a writer at work
    running.write_text("subject\n")
    write_table(pd.DataFrame({"subject": ["sub-01"], "lesion": [1]}), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "labels.tsv"]


def _no_training(*args, **kwargs):
    raise AssertionError("the output path must be refused before any work")


@pytest.mark.parametrize("obstacle", ["folder", "under a file"])
def test_output_paths_are_refused_before_any_work(project, manifest, tmp_path, capsys,
                                                  monkeypatch, obstacle):
    monkeypatch.setattr(cli_train, "build_patchset", _no_training)
    model = checkpoint_file(tmp_path / "model.pt")
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder.tsv").mkdir()
    out = tmp_path / ("a-folder.tsv" if obstacle == "folder" else "a-file/out.tsv")
    problem = "it is a folder" if obstacle == "folder" else f"{tmp_path / 'a-file'} is a file"
    commands = [("ratings", "export", project, "-o", out),
                ("lesions", manifest, "-o", out, "--quiet"),
                ("score", manifest, "--model", model, "-o", out, "--quiet"),
                ("train", manifest, "-o", out, "--quiet")]
    for command in commands:
        code, err = in_process(capsys, *command)
        assert code == 2 and f"{out}: cannot be written: {problem}" in err, (command, err)
        assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file", "a-folder.tsv", "manifest.csv", "model.pt", "study", "sub-01", "sub-02", "sub-03"]


TRAIN = ("--epochs", "1", "--patch-size", "12", "--samples-per-epoch", "8", "--batch-size", "8",
         "--device", "cpu", "--threads", "1", "--models", "1", "--quiet")


def _rescued(err: str) -> Path:
    """The folder the message says the trained model was kept in."""
    assert "was kept in " in err, err
    return Path(err.split("was kept in ", 1)[1].split(" instead", 1)[0])


def test_a_finished_training_is_kept_when_its_output_cannot_be_written(manifest, tmp_path, capsys,
                                                                       monkeypatch):
    """The output folder turns into a file while training runs: the model is not thrown away."""
    out = tmp_path / "models"
    out.mkdir()
    trained = cli_train.train

    def train_then_lose_the_folder(*args, **kwargs):
        result = yield from trained(*args, **kwargs)
        shutil.rmtree(out)
        out.write_text("in the way\n")
        return result

    monkeypatch.setattr(cli_train, "train", train_then_lose_the_folder)
    code, err = in_process(capsys, "train", manifest, "-o", out / "model.pt", *TRAIN)
    assert code == 2 and f"{out} is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    rescue = _rescued(err)
    try:
        assert load_checkpoint(rescue / "model.pt").patch_config.size == 12
        assert (rescue / "model_history.tsv").exists()
    finally:
        shutil.rmtree(rescue)


def test_training_onto_a_full_disk_keeps_the_model(manifest, full_disk):
    done = deep_prl("train", manifest, "-o", full_disk / "model.pt", *TRAIN)
    err = refused(done, f"{full_disk / 'model.pt'}: cannot be written: no space left on the disk "
                        f"holding {full_disk}")
    rescue = _rescued(err)
    try:
        assert load_checkpoint(rescue / "model.pt").patch_config.size == 12
    finally:
        shutil.rmtree(rescue)
    assert [p.name for p in full_disk.iterdir()] == ["filler"]


def test_project_init_onto_a_file_or_a_full_disk_says_so(manifest, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file\n")
    code, err = in_process(capsys, "project", "init", tmp_path / "taken", "--manifest", manifest,
                           "--quiet")
    assert code == 2 and f"{tmp_path / 'taken'}: cannot be written: it is a file" in err
    done = deep_prl("project", "init", tmp_path / "study", "--manifest", manifest, "--quiet",
                    file_size=4_000)
    refused(done, "file-size limit")


def test_merging_cross_validation_on_a_full_disk_says_so(tmp_path):
    from test_crossval import ScoreMethod, _truth

    truth = _truth()
    run_to_end(run_cv([ScoreMethod(truth)], truth, tmp_path, CVConfig(outer=3, inner=2)))
    done = deep_prl("cv", "--merge", tmp_path, "--quiet", file_size=1_000)
    refused(done, "file-size limit")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    merge(tmp_path)  # with room, the same folder merges


# -- 10. project init checks every image ------------------------------------------------------

def test_project_init_lists_every_image_problem_of_every_subject(tmp_path, write_subject, capsys):
    moved = write_subject("sub-01", seed=1)
    mask = nib.load(moved.mask)
    elsewhere = mask.affine.copy()
    elsewhere[0, 3] += 200.0  # not co-registered: 200 mm away
    nib.save(nib.Nifti1Image(np.asarray(mask.dataobj), elsewhere), moved.mask)
    other = write_subject("sub-02", seed=2)
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10, 2), np.float32), np.eye(4)), other.image("mp2rage"))
    manifest = write_manifest([moved, other], tmp_path / "manifest.csv")
    code, err = in_process(capsys, "project", "init", tmp_path / "study", "--manifest", manifest,
                           "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "2 problem(s)" in err and "no project was created" in err
    assert f"{moved.mask}: the mask image and the reference image" in err and "do not overlap" in err
    assert f"{other.image('mp2rage')}: mp2rage image has shape (10, 10, 10, 2): 2 volumes, not one" in err
    assert not (tmp_path / "study").exists()


def test_equal_images_written_under_one_name_give_equal_files(tmp_path):
    """Parallel tasks and a single process write byte-equal maps: the gzip header names the file
    itself, not the temporary file it was written to."""
    import gzip

    from napari_deep_prl.base.tables import write_nifti

    image = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4))
    first = write_nifti(image, tmp_path / "a" / "sub-01_probseg.nii.gz").read_bytes()
    assert write_nifti(image, tmp_path / "b" / "sub-01_probseg.nii.gz").read_bytes() == first
    header = first[10:first.index(b"\0", 10)]  # FNAME, after the 10-byte fixed header
    assert first[3] & gzip.FNAME and header == b"sub-01_probseg.nii"
