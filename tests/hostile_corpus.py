"""A corpus of hostile inputs: broken and lying images, hostile manifests, ids, rating tables,
checkpoints, stores and output paths. Each case builds its files in a fresh folder and says what
a correct ``deep-prl`` must do with it: refuse it with a message naming ``blame``, or accept it.

Used by ``test_hostile.py``, which runs every case through every subcommand that takes that kind
of input.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from conftest import blob_mask, save_nifti, write_subject_files

from napari_deep_prl.data.cohort import write_manifest
from napari_deep_prl.data.images import SubjectPaths


@dataclass
class Inputs:
    """What a case built: a manifest, and where present a project, a table, a model."""

    manifest: Path
    project: Path | None = None
    table: Path | None = None
    model: Path | None = None
    #: Files or folders a correct run must leave byte-identical (e.g. a refused store).
    untouched: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """``build(folder, base) -> Inputs``; ``refused``: the run must exit non-zero with one line
    naming ``blame``; ``memory``: run in a subprocess with a memory cap (a lying header)."""

    name: str
    kind: str
    build: Callable[[Path, Inputs], Inputs]
    refused: bool = True
    blame: str = ""
    memory: bool = False
    #: Commands that rightly accept it (``project init`` reads headers, not every voxel).
    accepted_by: tuple[str, ...] = ()


# -- helpers --------------------------------------------------------------------------------

def cohort(folder: Path, n: int = 2) -> tuple[Path, list[SubjectPaths]]:
    subjects = [write_subject_files(folder, f"sub-0{i}", seed=i) for i in range(1, n + 1)]
    return write_manifest(subjects, folder / "manifest.csv"), subjects


def with_file(folder: Path, role: str, write: Callable[[Path], None]) -> Inputs:
    """A two-subject cohort whose sub-02 ``role`` file is replaced by ``write(path)``."""
    manifest, subjects = cohort(folder)
    path = subjects[1].mask if role == "mask" else subjects[1].image(role)
    path.unlink()
    write(path)
    return Inputs(manifest)


def lying_header(path: Path, shape=(1000, 1000, 999), dtype=np.float64) -> None:
    """A NIfTI header promising gigabytes, followed by a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    raw = header.binaryblock + b"\x00" * 4 + b"\x00" * 1000
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def gzip_bomb(path: Path) -> None:
    """3 MB of valid gzip that inflates to a header plus gigabytes of zeros (as promised)."""
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 999))
    header.set_data_dtype(np.float64)
    header.set_sform(np.eye(4), code=1)
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header.binaryblock + b"\x00" * 4)
        block = b"\x00" * (1 << 24)
        for _ in range(192):  # 3 GB of zeros: about 3 MB compressed
            out.write(block)


def rotated(path: Path, like: Path, degrees: float = 30) -> None:
    img = nib.load(str(like))
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0],
                         [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), rotation @ img.affine), str(path))


def manifest_rows(folder: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Inputs:
    manifest, _ = cohort(folder)
    table = edit(pd.read_csv(manifest, dtype=str))
    table.to_csv(manifest, index=False)
    return Inputs(manifest)


def renamed_subject(subject: str) -> Callable[[Path, Inputs], Inputs]:
    def build(folder: Path, base: Inputs) -> Inputs:
        return manifest_rows(folder, lambda t: t.assign(subject=[t["subject"][0], subject]))
    return build


def ratings_table(rows: list[dict]) -> Callable[[Path, Inputs], Inputs]:
    def build(folder: Path, base: Inputs) -> Inputs:
        path = folder / "ratings.tsv"
        text = "subject\tlesion\trater\tlabel\n" + "".join(
            f"{r['subject']}\t{r['lesion']}\t{r['rater']}\t{r['label']}\n" for r in rows)
        path.write_text(text)
        return Inputs(base.manifest, base.project, table=path)
    return build


def checkpoint_case(change: Callable[[dict], None]) -> Callable[[Path, Inputs], Inputs]:
    """The base model with its metadata (a JSON string in the file) or weights edited."""
    def build(folder: Path, base: Inputs) -> Inputs:
        import torch

        payload = torch.load(base.model, weights_only=True)
        change(payload)
        path = folder / "model.pt"
        torch.save(payload, path)
        return Inputs(base.manifest, base.project, model=path)
    return build


def metadata_set(key: str, value: object) -> Callable[[dict], None]:
    """Set ``key`` (dotted for nested fields, e.g. ``patch.size``) in a checkpoint's metadata."""
    def change(payload: dict) -> None:
        metadata = json.loads(payload["metadata"])
        target, (*path, last) = metadata, key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
        payload["metadata"] = json.dumps(metadata)
    return change


def nan_weights(payload: dict) -> None:
    for tensor in payload["state_dict"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))


def store_case(write: Callable[[Path], None]) -> Callable[[Path, Inputs], Inputs]:
    """The base project's store replaced by ``write(db)``; every store file must stay as is."""
    def build(folder: Path, base: Inputs) -> Inputs:
        import shutil

        project = folder / "project"
        shutil.copytree(base.project, project)
        db = project / "ratings.sqlite"
        for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            leftover.unlink(missing_ok=True)
        write(db)
        return Inputs(base.manifest, project, untouched=store_data(project))
    return build


def store_data(project: Path) -> list[Path]:
    """The store's data files: the database and its write-ahead log. (Its ``-shm`` file is the
    log's shared-memory index, in which every reader, even a read-only one, records its read
    mark while another connection is open; it holds no data.)"""
    return sorted(p for p in project.glob("ratings.sqlite*") if not p.name.endswith("-shm"))


#: Connections kept open until the end of the test session, so that a store's WAL is still
#: pending (not checkpointed away) when the command under test meets it.
OPEN_CONNECTIONS: list[sqlite3.Connection] = []


def _with_pending_wal(db: Path, statements: list[str]) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    OPEN_CONNECTIONS.append(conn)


def corrupt_with_wal(db: Path) -> None:
    """A store whose main file's pages are garbage, with a committed transaction in its WAL."""
    _with_pending_wal(db, ["PRAGMA application_id=1683115852", "CREATE TABLE t (x)"])
    raw = bytearray(db.read_bytes())
    raw[100:] = b"\xff" * (len(raw) - 100)
    db.write_bytes(bytes(raw))
    OPEN_CONNECTIONS[-1].execute("INSERT INTO t VALUES (1)")
    OPEN_CONNECTIONS[-1].commit()


def foreign_with_wal(db: Path) -> None:
    _with_pending_wal(db, ["CREATE TABLE invoices (n)", "INSERT INTO invoices VALUES (42)"])


def newer_version(db: Path) -> None:
    """napari-deep-prl's application id, from a release with a newer schema."""
    _with_pending_wal(db, ["PRAGMA application_id=1683115852", "PRAGMA user_version=99",
                           "CREATE TABLE future (x)"])


# -- the corpus -------------------------------------------------------------------------------

IMAGE_CASES = [
    Case("zero-byte phase", "cohort",
         lambda f, b: with_file(f, "phase", lambda p: p.write_bytes(b"")), blame="sub-02_phase"),
    Case("text named .nii.gz", "cohort",
         lambda f, b: with_file(f, "mp2rage", lambda p: p.write_text("not an image")),
         blame="sub-02_mp2rage"),
    Case("truncated gzip mask", "cohort",
         lambda f, b: with_file(f, "mask", lambda p: p.write_bytes(
             gzip.compress(nib.Nifti1Image(blob_mask(), np.diag([1.0, 1.0, 1.5, 1.0])).to_bytes())[:100])),
         blame="sub-02_mask"),
    Case("4D phase", "cohort",
         lambda f, b: with_file(f, "phase", lambda p: save_nifti(
             p, np.zeros((32, 32, 24, 2), np.float32))), blame="sub-02_phase"),
    Case("all-NaN phase", "cohort",
         lambda f, b: with_file(f, "phase", lambda p: save_nifti(
             p, np.full((32, 32, 24), np.nan, np.float32))), blame="sub-02_phase",
         accepted_by=("project init",)),
    Case("complex phase", "cohort",
         lambda f, b: with_file(f, "phase", lambda p: save_nifti(
             p, np.ones((32, 32, 24), np.complex64))), blame="sub-02_phase"),
    Case("negative mask", "cohort",
         lambda f, b: with_file(f, "mask", lambda p: save_nifti(
             p, -blob_mask().astype(np.int16))), blame="sub-02_mask"),
    Case("mask rotated 30 degrees from its phase", "cohort",
         lambda f, b: with_file(f, "mask", lambda p: rotated(p, p.parent / "sub-02_phase.nii.gz")),
         blame="sub-02_mask"),
    Case("header promising 8 GB in 1,376 bytes", "cohort",
         lambda f, b: with_file(f, "mp2rage", lying_header), blame="sub-02_mp2rage", memory=True),
    Case("3 MB gzip inflating to 8 GB", "cohort",
         lambda f, b: with_file(f, "mask", gzip_bomb), blame="sub-02_mask", memory=True),
]

MANIFEST_CASES = [
    Case("subject id that climbs out of the folder", "cohort", renamed_subject("../../escaped"),
         blame="../../escaped"),
    Case("absolute subject id", "cohort", renamed_subject("/tmp/deep-prl-hostile-abs"),
         blame="/tmp/deep-prl-hostile-abs"),
    Case("formula subject id", "cohort", renamed_subject("=HYPERLINK(\"http://x\")"),
         blame="HYPERLINK"),
    Case("subject id with a tab", "cohort", renamed_subject("sub\t02"), blame="sub"),
    Case("duplicate subject", "cohort", lambda f, b: manifest_rows(
        f, lambda t: t.assign(subject=[t["subject"][0]] * 2)), blame="sub-01"),
    Case("manifest without a mask column", "cohort", lambda f, b: manifest_rows(
        f, lambda t: t.drop(columns="mask")), blame="mask"),
    Case("manifest naming a missing file", "cohort", lambda f, b: manifest_rows(
        f, lambda t: t.assign(phase=[t["phase"][0], "nowhere/sub-02_phase.nii.gz"])),
        blame="nowhere"),
]

TABLE_CASES = [
    Case("lesion 1.5", "table", ratings_table([
        {"subject": "sub-01", "lesion": "1.5", "rater": "ann", "label": "prl"}]), blame="1.5"),
    Case("blank rater", "table", ratings_table([
        {"subject": "sub-01", "lesion": "1", "rater": "", "label": "prl"}]), blame="rater"),
    Case("conflicting duplicate rows", "table", ratings_table([
        {"subject": "sub-01", "lesion": "1", "rater": "ann", "label": "prl"},
        {"subject": "sub-01", "lesion": "1", "rater": "ann", "label": "not_prl"}]), blame="ann"),
    Case("formula rater", "table", ratings_table([
        {"subject": "sub-01", "lesion": "1", "rater": "=1+1", "label": "prl"}]), blame="=1+1"),
    Case("rater named like a column", "table", ratings_table([
        {"subject": "sub-01", "lesion": "1", "rater": "consensus", "label": "prl"}]),
        blame="consensus"),
    Case("unknown subject", "table", ratings_table([
        {"subject": "sub-99", "lesion": "1", "rater": "ann", "label": "prl"}]), blame="sub-99"),
    Case("a clean table", "table", ratings_table([
        {"subject": "sub-01", "lesion": "1", "rater": "ann", "label": "prl"}]), refused=False),
]


def pickle_payload(folder: Path, base: Inputs) -> Inputs:
    """A pickle that would write a file if it were ever unpickled."""
    import pickle

    path = folder / "model.pt"
    path.write_bytes(pickle.dumps(_Payload(str(folder / "PWNED"))))
    return Inputs(base.manifest, base.project, model=path)


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "ran"))


def junk_model(folder: Path, base: Inputs) -> Inputs:
    path = folder / "model.pt"
    path.write_bytes(b"\x80\x02junk" * 10)
    return Inputs(base.manifest, base.project, model=path)


CHECKPOINT_CASES = [
    Case("pickle payload named .pt", "model", pickle_payload, blame="model.pt"),
    Case("random bytes named .pt", "model", junk_model, blame="model.pt"),
    Case("threshold NaN", "model", checkpoint_case(metadata_set("threshold", float("nan"))),
         blame="threshold"),
    Case("threshold 5", "model", checkpoint_case(metadata_set("threshold", 5.0)), blame="threshold"),
    Case("threshold -1", "model", checkpoint_case(metadata_set("threshold", -1.0)),
         blame="threshold"),
    Case("all-NaN weights", "model", checkpoint_case(nan_weights), blame="model.pt"),
    Case("patch size 2000", "model", checkpoint_case(metadata_set("patch.size", 2000)),
         blame="size", memory=True),
    Case("patch size 28.7", "model", checkpoint_case(metadata_set("patch.size", 28.7)),
         blame="size"),
    Case("network patch size 40 against patches of 8", "model",
         checkpoint_case(metadata_set("patch_size", 40)), blame="size"),
]


STORE_CASES = [
    Case("corrupt store with a pending WAL", "store", store_case(corrupt_with_wal),
         blame="ratings.sqlite"),
    Case("foreign SQLite file with a pending WAL", "store", store_case(foreign_with_wal),
         blame="ratings.sqlite"),
    Case("store from a newer version", "store", store_case(newer_version), blame="ratings.sqlite"),
    Case("project.json that is not JSON", "store", lambda f, b: _broken_config(f, b),
         blame="project.json"),
]


def _broken_config(folder: Path, base: Inputs) -> Inputs:
    import shutil

    project = folder / "project"
    shutil.copytree(base.project, project)
    (project / "project.json").write_text("{not json")
    return Inputs(base.manifest, project, untouched=store_data(project))


CASES = IMAGE_CASES + MANIFEST_CASES + TABLE_CASES + CHECKPOINT_CASES + STORE_CASES
