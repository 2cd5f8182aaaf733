"""Cohorts: the subjects of a manifest CSV/TSV, a BIDS dataset or a discovered folder, as paths.

A cohort holds only paths, so hundreds of subjects cost nothing until one is loaded
(:class:`~napari_deep_prl.data.images.Subject`). Subject ids must be valid ids: they name
output files and table rows.

A manifest names each image column by its contrast (:mod:`napari_deep_prl.data.contrasts`):
one susceptibility column (``phase`` or ``qsm``), one or more structural columns (``mp2rage``,
``t1w``, ``flair``), ``mask``, optionally ``prl_mask`` or ``prl_labels`` (with
``prl_labels_column``), display-only columns (``magnitude``, ``swi``) and ``reference`` (the
image whose grid the others are put on; blank: the susceptibility image's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from napari_deep_prl.base.errors import InputError, describe, file_error
from napari_deep_prl.base.filenames import ID_RULE, id_problem
from napari_deep_prl.base.tables import write_table
from napari_deep_prl.data.bids import BidsFindings, BidsSubject, find_bids_subjects
from napari_deep_prl.data.contrasts import DISPLAY_ONLY, STRUCTURAL, SUSCEPTIBILITY
from napari_deep_prl.data.images import (
    CONTRASTS,
    NIFTI_SUFFIXES,
    Subject,
    SubjectPaths,
    strip_nifti_suffix,
)
from napari_deep_prl.data.labels import LABEL_COLUMN_COLUMN

#: Manifest columns every manifest has, besides its image columns.
REQUIRED_COLUMNS = ("subject", "mask")
#: Manifest columns that may be there: ground truth, and the reference grid.
OPTIONAL_COLUMNS = ("prl_mask", "prl_labels", LABEL_COLUMN_COLUMN, "reference")
#: Columns holding a file path.
PATH_COLUMNS = (*CONTRASTS, "mask", "prl_mask", "prl_labels")
#: What a manifest's header must read, for messages.
MANIFEST_HEADER = ("subject, one susceptibility column (phase or qsm), one or more structural columns (mp2rage, "
                   "t1w, flair), mask, and optionally prl_mask or prl_labels, magnitude, swi, reference")


class Cohort(Sequence[SubjectPaths]):
    """An ordered, lazily loaded set of subjects with unique ids."""

    def __init__(self, subjects: Sequence[SubjectPaths], *, source: Path | None = None,
                 bids: BidsFindings | None = None) -> None:
        self._subjects = list(subjects)
        self._index = {s.subject: i for i, s in enumerate(self._subjects)}
        self.source = source
        #: What discovering a BIDS dataset found, skipped and ignored (``None``: not a BIDS dataset).
        self.bids = bids

    @property
    def ids(self) -> list[str]:
        return [s.subject for s in self._subjects]

    def __len__(self) -> int:
        return len(self._subjects)

    def __getitem__(self, key: str | int | slice) -> SubjectPaths:  # type: ignore[override]
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

    def load(self, subject: str, *, flip_phase: bool = False, extra: bool = False,
             contrasts: Sequence[str] | None = None) -> Subject:
        """Load one subject (:meth:`SubjectPaths.load`)."""
        return self[subject].load(flip_phase=flip_phase, extra=extra, contrasts=contrasts)

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
    """Read a cohort manifest CSV (or TSV): ``subject``, image columns named by their contrast
    (one of ``phase``/``qsm``, one or more of ``mp2rage``/``t1w``/``flair``), ``mask``, and
    optionally ``prl_mask`` or ``prl_labels`` (with ``prl_labels_column``), display-only
    ``magnitude``/``swi`` and ``reference``; blank cells where a subject has no such image.

    Relative paths are relative to the manifest's folder. Every path given must exist (a typo is
    reported when the cohort opens, not when a reviewer reaches the subject); every missing file
    is listed at once, so a site with an incomplete copy of the images sees what to copy. Columns that are
    none of these are ignored, unless they hold NIfTI files: an image column of an unknown
    contrast is refused. Subject ids must be valid ids
    (:func:`~napari_deep_prl.base.filenames.check_id`): they name output files and table rows.
    ``check_ids=False`` is for a project's own manifest, whose subjects were registered before
    ids were checked. Errors name the manifest row (as the line number in the file, the header
    being line 1).
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "manifest not found", f"Give the path of a CSV with columns {MANIFEST_HEADER}.")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig",
                            sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as err:
        raise file_error(path, f"manifest cannot be read as CSV ({describe(err)})",
                         "Save it as a comma-separated file with a header row.") from err
    table.columns = [str(c).strip() for c in table.columns]
    images = _image_columns(path, table)
    if table.empty:
        raise file_error(path, "manifest has no subjects", "Add one row per subject.")
    root = path.parent
    paths = [c for c in table.columns if c in PATH_COLUMNS and c not in images] + images
    rows: list[SubjectPaths] = []
    seen: dict[str, int] = {}
    missing: list[str] = []
    for i, row in enumerate(table.itertuples(index=False)):
        line = i + 2
        values = {c: str(getattr(row, c)).strip() for c in table.columns if c in (*PATH_COLUMNS, *OPTIONAL_COLUMNS,
                                                                                   "subject")}
        for column in ("subject", images[0], "mask"):
            if not values[column]:
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
        files = {c: _resolve(root, values[c]) for c in paths if values[c]}
        missing += [f"row {line} ({subject}): {column} file {file} not found"
                    for column, file in files.items() if not file.is_file()]
        if not any(c in files for c in STRUCTURAL):
            raise file_error(path, f"row {line} ({subject}) has no structural image (its "
                             f"{', '.join(c for c in images if c in STRUCTURAL)} cells are blank)",
                             "Give each subject one or more structural images.")
        if "prl_mask" in files and "prl_labels" in files:
            raise file_error(path, f"row {line} ({subject}) gives both a prl_mask and prl_labels",
                             "Give one ground truth per subject.")
        label_column = values.get(LABEL_COLUMN_COLUMN) or None
        if label_column is not None and "prl_labels" not in files:
            raise file_error(path, f"row {line} ({subject}) names a {LABEL_COLUMN_COLUMN} but no prl_labels table",
                             "Give the table, or leave the column blank.")
        try:
            rows.append(SubjectPaths(subject, tuple((c, files[c]) for c in images if c in files), files["mask"],
                                     files.get("prl_mask"), files.get("prl_labels"), prl_labels_column=label_column,
                                     reference=values.get("reference") or None))
        except InputError as err:
            raise InputError(f"{path}: row {line}: {err}") from None
    if missing:
        raise file_error(path, f"{len(missing)} image file(s) not found: {'; '.join(missing)}",
                         f"Fix the paths or copy the files there; relative paths are relative to "
                         f"the manifest's folder ({root})")
    return Cohort(rows, source=path)


def _image_columns(path: Path, table: pd.DataFrame) -> list[str]:
    """The manifest's image columns (contrasts, in column order); refused when ``subject`` or
    ``mask`` is missing, when it has no or two susceptibility columns or no structural one, and
    when a column of another name holds NIfTI files."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise file_error(path, f"manifest lacks column(s) {', '.join(missing)} (has: {', '.join(table.columns)})",
                         f"The header must read {MANIFEST_HEADER}.")
    known = {"subject", *PATH_COLUMNS, *OPTIONAL_COLUMNS}
    for column in (c for c in table.columns if c not in known):
        image = next((v.strip() for v in table[column] if v.strip().lower().endswith(NIFTI_SUFFIXES)), None)
        if image is not None:
            raise file_error(path, f"column '{column}' holds images (e.g. {image}) but is no contrast this package "
                             f"knows", f"Name each image column by its contrast, one of {', '.join(CONTRASTS)} "
                             "(docs/data.md); rename the column, or remove it")
    images = [c for c in table.columns if c in CONTRASTS]
    susceptibility = [c for c in images if c in SUSCEPTIBILITY]
    if len(susceptibility) != 1:
        problem = ("no susceptibility column" if not susceptibility
                   else f"two susceptibility columns ({' and '.join(susceptibility)})")
        raise file_error(path, f"manifest has {problem}: a cohort uses one susceptibility image, phase (unwrapped "
                         "or filtered phase) or qsm (susceptibility in ppm)",
                         "Keep one column, phase or qsm (a cohort of each is two manifests)")
    if not any(c in STRUCTURAL for c in images):
        raise file_error(path, f"manifest has no structural column (has: {', '.join(table.columns)})",
                         f"Add one or more of {', '.join(STRUCTURAL)}.")
    return images


def _resolve(root: Path, value: str) -> Path:
    candidate = Path(os.path.expanduser(value))
    return candidate if candidate.is_absolute() else root / candidate


def write_manifest(subjects: Sequence[SubjectPaths], path: str | Path) -> Path:
    """Write a manifest whose paths are relative to its folder where possible (atomic write):
    ``subject``, the subjects' susceptibility and structural columns, ``mask``, the ground truth
    they have, their display-only columns and ``reference`` if any subject names one; blank
    where a subject has no such image."""
    path = Path(path)
    root = path.parent.resolve()
    have = {name for s in subjects for name, _ in s.images}
    leading = [c for c in (*SUSCEPTIBILITY, *STRUCTURAL) if c in have]
    truth = [c for c in ("prl_mask", "prl_labels") if any(getattr(s, c) is not None for s in subjects)]
    trailing = [c for c in DISPLAY_ONLY if c in have]

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        p = Path(p).resolve()
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    def cells(s: SubjectPaths) -> dict[str, str]:
        images = dict(s.images)
        row = {"subject": s.subject, **{c: rel(images.get(c)) for c in leading}, "mask": rel(s.mask),
               **{c: rel(getattr(s, c)) for c in truth}}
        if any(x.prl_labels_column is not None for x in subjects):
            row[LABEL_COLUMN_COLUMN] = s.prl_labels_column or ""
        row.update({c: rel(images.get(c)) for c in trailing})
        if any(x.reference is not None for x in subjects):
            row["reference"] = s.reference or ""
        return row

    return write_table(pd.DataFrame([cells(s) for s in subjects]), path)


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
    """The role (a contrast, ``mask`` or ``prl_mask``) of a NIfTI file from its name in the
    documented layout, or ``None``."""
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
    per role, recognised by the end of its name (:data:`ROLE_PATTERNS`): a susceptibility image
    (``*_phase`` or ``part-phase``; or ``*_qsm`` or ``*_Chimap``), one or more structural images
    (``*_mp2rage``/``*_UNIT1``, ``*_T1w``, ``*_FLAIR``), ``*_mask`` (or ``desc-lesion_mask``)
    and optionally ``*_prlmask`` (or ``desc-prl_mask``) and display-only images (``*_magnitude``
    or ``part-mag``, ``*_swi``). The folder's name is the subject id (``check_ids``: as
    :func:`read_manifest`).
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
    found = subject_files(sub_dir, check_ids=check_ids)
    missing = [what for what, names in (("phase or qsm", SUSCEPTIBILITY), ("structural", STRUCTURAL),
                                        ("mask", ("mask",))) if not any(n in found for n in names)]
    if missing:
        raise file_error(sub_dir, f"no {', no '.join(missing)} image found",
                         "Name the files *_phase.nii.gz (or *_qsm), *_mp2rage.nii.gz (or *_T1w, *_FLAIR) and "
                         "*_mask.nii.gz (docs/data.md).")
    return SubjectPaths(sub_dir.name, tuple((name, found[name]) for name in CONTRASTS if name in found),
                        found["mask"], found.get("prl_mask"))


def subject_files(sub_dir: str | Path, *, check_ids: bool = True) -> dict[str, Path]:
    """The files of a ``sub-<label>`` folder by role (:func:`classify_file`), one per role and
    one susceptibility image; what the folder lacks is not checked (:func:`discover_subject` does)."""
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
    susceptibility = [found[c].name for c in SUSCEPTIBILITY if c in found]
    if len(susceptibility) > 1:
        raise file_error(sub_dir, f"two susceptibility images: {' and '.join(susceptibility)}",
                         "Keep one, the phase or the QSM, or list the subject in a manifest CSV instead.")
    return found


def open_cohort(path: str | Path, *, check_ids: bool = True, bids: Mapping[str, Any] | None = None) -> Cohort:
    """A cohort from a manifest CSV/TSV or a folder: its ``manifest.csv`` if it has one, else a
    BIDS dataset's subjects if it is one (it holds ``dataset_description.json``;
    :func:`~napari_deep_prl.data.bids.find_bids_subjects`, with ``Cohort.bids`` saying what was
    skipped), else the subject folders it holds (:func:`discover`); ``check_ids`` as
    :func:`read_manifest`. ``bids``: keywords of ``find_bids_subjects`` (``derivatives``,
    ``participant_label``, ``session``, ``select``, ``susceptibility``), for a BIDS dataset only."""
    path = Path(path)
    is_bids = path.is_dir() and not (path / "manifest.csv").is_file() and (path / "dataset_description.json").is_file()
    if bids and not is_bids:
        raise InputError(f"{path}: not a BIDS dataset (a folder holding dataset_description.json and no "
                         f"manifest.csv), so the BIDS options ({', '.join(sorted(bids))}) do not apply. Leave them "
                         "out, or give the BIDS dataset's folder.")
    if not path.is_dir():
        return read_manifest(path, check_ids=check_ids)
    if (path / "manifest.csv").is_file():
        return read_manifest(path / "manifest.csv", check_ids=check_ids)
    if is_bids:
        found = find_bids_subjects(path, **(bids or {}))
        return Cohort([bids_subject_paths(s) for s in found.subjects], source=path, bids=found)
    return discover(path, check_ids=check_ids)


def bids_subject_paths(found: BidsSubject) -> SubjectPaths:
    """The files of a subject (session) found in a BIDS dataset, as the package reads a subject."""
    return SubjectPaths(found.id, tuple((c, p) for c, p in found.images.items() if c in CONTRASTS),
                        found.images["mask"], found.images.get("prl_mask"))
