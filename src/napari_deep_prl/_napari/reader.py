"""npe2 reader: a subject folder, a cohort folder or a manifest CSV opens one subject's layers.

A cohort (manifest or folder of ``sub-*``) opens its first subject; the review widget navigates
the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari_deep_prl._napari.layers import LayerData, subject_layers
from napari_deep_prl.data.cohort import (
    REQUIRED_COLUMNS,
    classify_file,
    discover_subject,
    open_cohort,
)
from napari_deep_prl.data.contrasts import SUSCEPTIBILITY
from napari_deep_prl.data.images import SubjectPaths


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader when ``path`` looks like ours, else ``None`` so napari tries others."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    target = Path(path)
    if target.is_dir():
        return read_path if _is_subject_folder(target) or any(target.glob("sub-*")) \
            or (target / "manifest.csv").is_file() else None
    if target.suffix.lower() in (".csv", ".tsv") and _has_manifest_header(target):
        return read_path
    return None


def read_path(path: str | list[str]) -> list[LayerData]:
    """Load the subject's layers; napari shows our errors (which say what to do) as notifications."""
    if isinstance(path, list):
        path = path[0]
    subject_paths = _subject_at(Path(path))
    return subject_layers(subject_paths.load(extra=True))


def _subject_at(path: Path) -> SubjectPaths:
    if path.is_dir() and _is_subject_folder(path):
        return discover_subject(path)
    return open_cohort(path)[0]


def _is_subject_folder(path: Path) -> bool:
    return path.name.startswith("sub-") and any(classify_file(f.name) in SUSCEPTIBILITY for f in path.rglob("*"))


def _has_manifest_header(path: Path) -> bool:
    try:
        with path.open() as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    columns = {c.strip() for c in header.replace("\t", ",").split(",")}
    return set(REQUIRED_COLUMNS) <= columns and bool(columns & set(SUSCEPTIBILITY))
