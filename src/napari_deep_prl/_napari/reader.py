"""npe2 reader: a subject folder, a cohort folder or a manifest CSV opens one subject's layers.

A cohort (manifest or folder of ``sub-*``) opens its first subject; the review widget navigates
the others. A subject folder without a lesion mask opens too, with an empty lesion layer: its
lesions are then clicked in the model panel (``Score a clicked lesion``), as ``deep-prl score
--at`` does on the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_info

from napari_deep_prl._napari import messages
from napari_deep_prl._napari.layers import LayerData, subject_layers
from napari_deep_prl.data.click import load_unmasked
from napari_deep_prl.data.cohort import (
    REQUIRED_COLUMNS,
    classify_file,
    discover_subject,
    open_cohort,
    subject_files,
)
from napari_deep_prl.data.contrasts import SUSCEPTIBILITY
from napari_deep_prl.data.images import CONTRASTS, Subject


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
    return subject_layers(_subject_at(Path(path)))


def _subject_at(path: Path) -> Subject:
    if not (path.is_dir() and _is_subject_folder(path)):
        return open_cohort(path)[0].load(extra=True)
    found = subject_files(path)
    if "mask" in found:
        return discover_subject(path).load(extra=True)
    subject = load_unmasked({role: file for role, file in found.items() if role in CONTRASTS},
                            subject=path.name, prl_mask=found.get("prl_mask"), extra=True)
    show_info(messages.NO_MASK.format(subject=subject.subject))
    return subject


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
