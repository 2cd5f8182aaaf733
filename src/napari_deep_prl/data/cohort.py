"""Cohorts: the subjects of a manifest CSV/TSV or of a discovered folder, as paths.

A cohort holds only paths, so hundreds of subjects cost nothing until one is loaded
(:class:`~napari_deep_prl.data.images.Subject`). Subject ids must be valid ids: they name
output files and table rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from napari_deep_prl.base.errors import InputError, describe, file_error
from napari_deep_prl.base.filenames import ID_RULE, id_problem
from napari_deep_prl.base.tables import write_table
from napari_deep_prl.data.images import (
    EXTRA_CONTRASTS,
    NIFTI_SUFFIXES,
    Subject,
    SubjectPaths,
    strip_nifti_suffix,
)
from napari_deep_prl.data.labels import LABEL_COLUMN_COLUMN

#: Manifest columns, required then optional.
REQUIRED_COLUMNS = ("subject", "phase", "mp2rage", "mask")

OPTIONAL_COLUMNS = ("prl_mask", "prl_labels")

class Cohort(Sequence[SubjectPaths]):
    """An ordered, lazily loaded set of subjects with unique ids."""

    def __init__(self, subjects: Sequence[SubjectPaths], *, source: Path | None = None) -> None:
        self._subjects = list(subjects)
        self._index = {s.subject: i for i, s in enumerate(self._subjects)}
        self.source = source

    @property
    def ids(self) -> list[str]:
        return [s.subject for s in self._subjects]

    def __len__(self) -> int:
        return len(self._subjects)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._subjects[self._index[key]]
            except KeyError:
                where = f" in {self.source}" if self.source else ""
                raise InputError(f"unknown subject '{key}'{where}. Known subjects: "
                                 f"{', '.join(self.ids[:10])}{' ...' if len(self) > 10 else ''}.") from None
        return self._subjects[key]

    def __iter__(self) -> Iterator[SubjectPaths]:
        return iter(self._subjects)

    def load(self, subject: str, *, flip_phase: bool = False, extra: bool = False) -> Subject:
        return self[subject].load(flip_phase=flip_phase, extra=extra)

    @property
    def has_prl_masks(self) -> bool:
        return bool(self._subjects) and all(s.prl_mask is not None for s in self._subjects)



def require_truth(subjects: Sequence[SubjectPaths], purpose: str) -> None:
    """Refuse, naming the first subject without one, unless every subject has ground truth."""
    lacking = [s.subject for s in subjects if not s.has_truth]
    if lacking:
        raise InputError(f"subject {lacking[0]} has no ground truth ({len(lacking)} of {len(subjects)} lack one): "
                         f"{purpose} needs it. Add a prl_mask (PRL voxels) or prl_labels (lesion label "
                         "table) column to the manifest.")



def read_manifest(path: str | Path, *, check_ids: bool = True) -> Cohort:
    """Read a cohort manifest CSV (``subject,phase,mp2rage,mask[,prl_mask][,prl_labels
    [,prl_labels_column]]``, and any :data:`EXTRA_CONTRASTS` columns: extra images, blank where
    a subject has none).

    Relative paths are relative to the manifest's folder. Every path given must exist, the extra
    images' too (a typo is reported when the cohort opens, not when a reviewer reaches the
    subject). Subject ids must be valid ids (:func:`~napari_deep_prl.base.filenames.check_id`): they
    name output files and table rows. ``check_ids=False`` is for a project's own manifest, whose
    subjects were registered before ids were checked. Errors name the manifest row (as the line
    number in the file, the header being line 1).
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "manifest not found", "Give the path of a CSV with columns "
                         + ",".join(REQUIRED_COLUMNS) + "[,prl_mask].")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig",
                            sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as err:
        raise file_error(path, f"manifest cannot be read as CSV ({describe(err)})",
                         "Save it as a comma-separated file with a header row.") from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise file_error(path, f"manifest lacks column(s) {', '.join(missing)} (has: {', '.join(table.columns)})",
                         "The header must read subject,phase,mp2rage,mask and optionally prl_mask or prl_labels.")
    if table.empty:
        raise file_error(path, "manifest has no subjects", "Add one row per subject.")
    root = path.parent
    optional = [c for c in OPTIONAL_COLUMNS if c in table.columns]
    extras = [c for c in table.columns if c in EXTRA_CONTRASTS]
    rows: list[SubjectPaths] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(table.itertuples(index=False)):
        line = i + 2
        values = {c: str(getattr(row, c)).strip() for c in REQUIRED_COLUMNS}
        for column, value in values.items():
            if not value:
                raise file_error(path, f"row {line} has an empty '{column}'", "Fill in every required column.")
        subject = values["subject"]
        problem = id_problem(subject) if check_ids else None
        if problem is not None:
            raise file_error(path, f"row {line}: subject id {subject!r} {problem}",
                             f"Rename the subject: {ID_RULE} (docs/data.md).")
        if subject in seen:
            raise file_error(path, f"subject '{subject}' appears twice (rows {seen[subject]} and {line})",
                             "Subject ids must be unique.")
        seen[subject] = line
        files = {c: _resolve(root, values[c]) for c in ("phase", "mp2rage", "mask")}
        for column in optional + extras:
            value = str(getattr(row, column)).strip()
            files[column] = _resolve(root, value) if value else None
        for column, file in files.items():
            if file is not None and not file.is_file():
                raise file_error(path, f"row {line} ({subject}): {column} file {file} not found",
                                 "Fix the path; relative paths are relative to the manifest's folder.")
        if files.get("prl_mask") is not None and files.get("prl_labels") is not None:
            raise file_error(path, f"row {line} ({subject}) gives both a prl_mask and prl_labels",
                             "Give one ground truth per subject.")
        label_column = str(getattr(row, LABEL_COLUMN_COLUMN, "")).strip() or None
        if label_column is not None and files.get("prl_labels") is None:
            raise file_error(path, f"row {line} ({subject}) names a {LABEL_COLUMN_COLUMN} but no prl_labels table",
                             "Give the table, or leave the column blank.")
        rows.append(SubjectPaths(subject, files["phase"], files["mp2rage"], files["mask"],
                                 files.get("prl_mask"), files.get("prl_labels"),
                                 tuple((c, files[c]) for c in extras if files[c] is not None),
                                 prl_labels_column=label_column))
    return Cohort(rows, source=path)



def _resolve(root: Path, value: str) -> Path:
    candidate = Path(os.path.expanduser(value))
    return candidate if candidate.is_absolute() else root / candidate



def write_manifest(subjects: Sequence[SubjectPaths], path: str | Path) -> Path:
    """Write a manifest whose paths are relative to its folder where possible (atomic write);
    the subjects' extra images follow as columns named by contrast, blank where one has none."""
    path = Path(path)
    root = path.parent.resolve()
    columns = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(getattr(s, c) is not None for s in subjects)]
    extras = list(dict.fromkeys(name for s in subjects for name, _ in s.extra))

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        p = Path(p).resolve()
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    table = pd.DataFrame([[s.subject] + [rel(getattr(s, c)) for c in columns[1:]]
                          + [rel(dict(s.extra).get(c)) for c in extras] for s in subjects],
                         columns=columns + extras)
    if any(s.prl_labels_column is not None for s in subjects):
        table.insert(len(columns), LABEL_COLUMN_COLUMN, [s.prl_labels_column or "" for s in subjects])
    return write_table(table, path)



#: How a file name (lower case, NIfTI suffix removed) tells its role; checked in this order.
ROLE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("prl_mask", re.compile(r"(desc-prl_mask|_prl_?mask)$")),
    ("mask", re.compile(r"(desc-lesions?_mask|_lesions?_?mask|_mask)$")),
    ("phase", re.compile(r"(_phase|part-phase.*)$")),
    ("mp2rage", re.compile(r"(_mp2rage|_unit1|_uni)$")),
    ("t1w", re.compile(r"_t1w$")),
    ("flair", re.compile(r"_flair$")),
    ("magnitude", re.compile(r"(_magnitude|part-mag.*)$")),
    ("swi", re.compile(r"_swi$")),
    ("qsm", re.compile(r"(_qsm|_chimap)$")),
)

def classify_file(name: str) -> str | None:
    """The role (or extra contrast) of a NIfTI file from its name in the documented layout, or
    ``None``. A ``*_T1w`` file is ``t1w``: :func:`discover_subject` takes it as the subject's
    MP2RAGE role when there is no MP2RAGE/UNIT1 file."""
    lower = name.lower()
    if not lower.endswith(NIFTI_SUFFIXES):
        return None
    stem = strip_nifti_suffix(lower)
    for role, pattern in ROLE_PATTERNS:
        if pattern.search(stem):
            return role
    return None



def discover(folder: str | Path, *, check_ids: bool = True) -> Cohort:
    """Find subjects in a BIDS-derivative-like folder.

    Each ``sub-<label>`` folder (searched recursively, e.g. ``sub-01/anat/``) must hold one file
    per role, recognised by the end of its name: ``*_phase`` (or ``part-phase``),
    ``*_mp2rage``/``*_UNIT1``/``*_T1w``, ``*_mask`` (or ``desc-lesion_mask``) and optionally
    ``*_prlmask`` (or ``desc-prl_mask``) and extra images (``*_FLAIR``, ``*_T1w`` beside an
    MP2RAGE, ``*_magnitude`` or ``part-mag``, ``*_swi``, ``*_qsm`` or ``*_Chimap``). The
    folder's name is the subject id (``check_ids``: as :func:`read_manifest`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise file_error(folder, "folder not found", "Give a folder holding sub-<label> folders or a manifest CSV.")
    subject_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    if not subject_dirs:
        raise file_error(folder, "no sub-<label> folders found",
                         "Arrange the data as documented (docs/data.md) or give a manifest CSV.")
    return Cohort([discover_subject(d, check_ids=check_ids) for d in subject_dirs], source=folder)



def discover_subject(sub_dir: str | Path, *, check_ids: bool = True) -> SubjectPaths:
    """One ``sub-<label>`` folder of the documented layout (see :func:`discover`)."""
    sub_dir = Path(sub_dir)
    problem = id_problem(sub_dir.name) if check_ids else None
    if problem is not None:
        raise file_error(sub_dir, f"the folder's name, the subject id, {problem}",
                         f"Rename the folder: {ID_RULE} (docs/data.md).")
    found: dict[str, Path] = {}
    for file in sorted(sub_dir.rglob("*")):
        role = classify_file(file.name) if file.is_file() else None
        if role is None:
            continue
        if role in found:
            raise file_error(sub_dir, f"two {role} images: {found[role].name} and {file.name}",
                             "Keep one per subject or list the subject in a manifest CSV instead.")
        found[role] = file
    if "mp2rage" not in found and "t1w" in found:
        found["mp2rage"] = found.pop("t1w")
    missing = [r for r in ("phase", "mp2rage", "mask") if r not in found]
    if missing:
        raise file_error(sub_dir, f"no {', '.join(missing)} image found",
                         "Name the files *_phase.nii.gz, *_mp2rage.nii.gz and *_mask.nii.gz (docs/data.md).")
    return SubjectPaths(sub_dir.name, found["phase"], found["mp2rage"], found["mask"], found.get("prl_mask"),
                        extra=tuple((name, found[name]) for name in EXTRA_CONTRASTS if name in found))



def open_cohort(path: str | Path, *, check_ids: bool = True) -> Cohort:
    """A cohort from a manifest CSV/TSV or a folder (its ``manifest.csv`` if present, else
    discovery); ``check_ids`` as :func:`read_manifest`."""
    path = Path(path)
    if path.is_dir():
        manifest = path / "manifest.csv"
        return (read_manifest(manifest, check_ids=check_ids) if manifest.is_file()
                else discover(path, check_ids=check_ids))
    return read_manifest(path, check_ids=check_ids)


